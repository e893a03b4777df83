"""Keeps the activations above a multiple of their channel's mean."""

import keras
from keras import ops

from keras_hebb import _checks
from keras_hebb import surrogates


@keras.saving.register_keras_serializable(package="keras_hebb")
class AdaptiveThreshold(keras.layers.Layer):
    """Keeps `x` where `x > scale * mean_{h,w}(x)`, per image and channel.

    A cheaper variant of `FractionalThreshold`: the number of survivors
    adapts to each channel's distribution instead of being fixed.

    Example:

    >>> layer = AdaptiveThreshold(scale=1.0)
    >>> x = np.array([1, 1, 1, 5], "float32").reshape(1, 2, 2, 1)
    >>> layer(x).numpy().ravel().tolist()
    [0.0, 0.0, 0.0, 5.0]

    Args:
        scale: multiple of the channel mean below which values are zeroed,
            `>= 0`. Defaults to `1.0`.
        **kwargs: Base layer keyword arguments.

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _checks.check_non_negative("scale", scale)

    def build(self, input_shape):
        _checks.check_image_rank(self, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        threshold = self.scale * ops.mean(x, axis=(1, 2), keepdims=True)
        # Inside `surrogates.surrogate_gradients()` (BPDA) only: the same
        # value with a smooth gradient.
        return ops.cast(surrogates.keep_above(x, threshold), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
