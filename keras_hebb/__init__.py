"""keras_hebb: neuro-inspired networks with sparse, strong activations.

Keras 3 layers and a training step for Hebbian/anti-Hebbian (HaH) networks
(Cekic, Bakiskan, Madhow, arXiv:2202.13074).
"""

from keras_hebb import architectures, layers, sparsity
from keras_hebb._context import collect_hah_costs
from keras_hebb.hah_cost import hah_cost
from keras_hebb.hebbian_model import PAPER_ALPHAS, HebbianModel
from keras_hebb.similarity_matching_model import SimilarityMatchingModel

__version__ = "0.1.0"

__all__ = [
    "HebbianModel",
    "PAPER_ALPHAS",
    "SimilarityMatchingModel",
    "architectures",
    "collect_hah_costs",
    "hah_cost",
    "layers",
    "sparsity",
]
