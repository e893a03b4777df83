"""What every similarity-matching layer shares: the settings of its neural
dynamics and of its weights, their checks, and their config."""

import keras
import numpy as np

from keras_hebb import _checks


class SimilarityMatchingBase(keras.layers.Layer):
    """Base of `SimilarityMatching` (and its structured variant) and
    `DeepSimilarityMatching`; not a layer to use on its own.

    Args:
        non_negative: rectified (NSM) or linear dynamics.
        tau: ratio of the lateral to the feedforward learning rate, `> 0`.
        iterations: most steps of the dynamics, a positive int.
        tolerance: the dynamics stop when their residual is below it, `>= 0`.
        kernel_initializer: initializer of the feedforward weights.
        train_by_backprop: whether the weights are trainable by a loss.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(self, non_negative, tau, iterations, tolerance,
                 kernel_initializer, train_by_backprop, **kwargs):
        super().__init__(**kwargs)
        self.non_negative = bool(non_negative)
        self.tau = _checks.check_positive("tau", tau)
        self.iterations = _checks.check_positive_int("iterations", iterations)
        self.tolerance = _checks.check_non_negative("tolerance", tolerance)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.train_by_backprop = bool(train_by_backprop)

    def _input_dim(self, input_shape):
        """The number of input values per example (its dimensions' product)."""
        dims = input_shape[1:]
        if not dims or any(d is None for d in dims):
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) needs inputs "
                "(batch, ...) with known non-batch dimensions. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        return int(np.prod(dims))

    def get_config(self):
        return {
            **super().get_config(),
            "non_negative": self.non_negative,
            "tau": self.tau,
            "iterations": self.iterations,
            "tolerance": self.tolerance,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "train_by_backprop": self.train_by_backprop,
        }
