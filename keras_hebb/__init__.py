"""keras_hebb: neuro-inspired networks with sparse, strong activations.

Keras 3 layers and a training step for Hebbian/anti-Hebbian (HaH) networks
(Cekic, Bakiskan, Madhow, arXiv:2202.13074), on the TensorFlow, JAX and
torch backends of Keras (`KERAS_BACKEND`; on torch the layers and their HaH
layer losses, no adversarial training); importing it on another backend
raises a one-line `RuntimeError`. Importing it on JAX does not import TensorFlow:
the TensorFlow-only parts (the native and fused ops, the robustness
attacks) import it when used, and on JAX raise a one-line `RuntimeError`
naming the backend they need.

Public modules: `layers`, `architectures`, `data`, `sparsity`, `pruning`,
`plots` (the reports' figures), `errors`, `runtime` (what the training
and export programs need from the runtime), `surrogates` (BPDA surrogate gradients:
`surrogates.surrogate_gradients`) and `robustness` (loads its attack
libraries lazily, on first use).
"""

from keras_hebb import _trainers

_trainers.check_backend()

from keras_hebb import (  # noqa: E402
    architectures,
    data,
    errors,
    layers,
    plots,
    pruning,
    robustness,
    runtime,
    sparsity,
    surrogates,
)
from keras_hebb._context import collect_hah_costs  # noqa: E402
from keras_hebb.hah_cost import hah_cost  # noqa: E402
from keras_hebb.hebbian_model import PAPER_ALPHAS, HebbianModel  # noqa: E402
from keras_hebb.similarity_matching_model import SimilarityMatchingModel  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "HebbianModel",
    "PAPER_ALPHAS",
    "SimilarityMatchingModel",
    "architectures",
    "collect_hah_costs",
    "data",
    "errors",
    "hah_cost",
    "layers",
    "plots",
    "pruning",
    "robustness",
    "runtime",
    "sparsity",
    "surrogates",
]
