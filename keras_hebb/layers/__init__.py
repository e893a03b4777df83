"""Keras layers of HaH networks."""

from keras_hebb.layers.adaptive_threshold import AdaptiveThreshold
from keras_hebb.layers.deep_similarity_matching import DeepSimilarityMatching
from keras_hebb.layers.divisive_normalization import DivisiveNormalization
from keras_hebb.layers.fractional_threshold import FractionalThreshold
from keras_hebb.layers.hah_block import HaHBlock
from keras_hebb.layers.similarity_matching import SimilarityMatching
from keras_hebb.layers.structured_similarity_matching import StructuredSimilarityMatching
from keras_hebb.layers.unit_norm_conv2d import UnitNormConv2D

__all__ = [
    "AdaptiveThreshold",
    "DeepSimilarityMatching",
    "DivisiveNormalization",
    "FractionalThreshold",
    "HaHBlock",
    "SimilarityMatching",
    "StructuredSimilarityMatching",
    "UnitNormConv2D",
]
