"""Divisive normalization by a local suppression field (replaces batch norm)."""

import keras
from keras import ops

from keras_hebb import _checks
from keras_hebb import surrogates

FIELDS = ("linf", "l1", "l2")

#: Keeps the denominator positive where a whole image is zero.
EPSILON = 1e-7


def reciprocal_denominator(field, peak, sigma):
    """`1 / (sigma * peak + (1 - sigma) * field + EPSILON)`, as an int8
    TFLite graph computes it well.

    Computed as `r * r / sigma` with `r = rsqrt(peak + c * field + EPSILON /
    sigma)` and `c = (1 - sigma) / sigma`: the same value to float rounding
    (a few ulps). Two reasons, both about the int8 TFLite file:

    - no int8 `DIV`: TensorFlow's TFLite kernel refuses a divisor whose raw
      int8 value is 0, which with a zero point of -128 is a real value in
      the middle of the range, so the file failed on most images in
      `tf.lite.Interpreter` (LiteRT's kernel runs it); it was also the
      least precise op of the block;
    - the constant factors fold into ops needed anyway, so fewer
      intermediate tensors are requantized, each with an error relative to
      its range over the calibration images rather than to the image.

    Together they raised the int8 file's argmax agreement with Keras from
    95.2% to 96.0% on the export tests' network and from 91.9-92.6% to
    93.2% on a one-epoch one (`python -m benchmarks.int8_accuracy
    [--legacy-normalization]`, docs/EXPORT.md).
    Works on `keras.ops` and TensorFlow tensors alike.
    """
    if sigma == 0.0:
        r = ops.rsqrt(field + EPSILON)
        return r * r
    if sigma == 1.0:
        r = ops.rsqrt(peak + EPSILON)
        return r * r
    share = (1.0 - sigma) / sigma
    r = ops.rsqrt(peak + share * field + EPSILON / sigma)
    return (r * (1.0 / sigma)) * r


@keras.saving.register_keras_serializable(package="keras_hebb")
class DivisiveNormalization(keras.layers.Layer):
    """Divides activations by a smoothed, channel-averaged local field.

    For NHWC activations `a` (normally after a ReLU):

    1. suppression field per channel, over a `size x size` neighbourhood
       (stride 1, zero padding): `"linf"`: `s_c = maxpool(|a_c|)`,
       `"l1"`: `s_c = sum(|a_c|)`, `"l2"`: `s_c = sqrt(sum(a_c * a_c))`;
    2. channel average `S = mean_c s_c`, shape `(N, H, W, 1)`;
    3. `D = sigma * max_{h,w} S + (1 - sigma) * S + 1e-7`, output `a / D`.

    A strong response next to weak ones keeps its size, uniform responses
    are flattened: the layer sharpens the contrast between neurons without
    batch statistics, so it behaves the same in training and inference. No
    trainable weights; the math runs in float32 under mixed precision.

    Example:

    >>> layer = DivisiveNormalization(field="linf", sigma=0.1)
    >>> layer(np.ones((1, 8, 8, 4), "float32")).shape
    (1, 8, 8, 4)

    Args:
        field: `"linf"`, `"l1"` or `"l2"`, how the neighbourhood is pooled.
            Defaults to `"linf"`.
        size: odd side of the square neighbourhood. Defaults to `3`.
        sigma: weight of the image-wide maximum against the local field,
            in `[0, 1]`. Defaults to `0.1`.
        nonnegative_inputs: whether the inputs are known to be `>= 0` (after
            a ReLU, as in `HaHBlock`): `|a|` is then `a` itself, one op less
            with the same value and gradient. Defaults to `False`.
        **kwargs: Base layer keyword arguments.

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, field="linf", size=3, sigma=0.1, nonnegative_inputs=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.field = _checks.check_choice("field", field, FIELDS)
        self.size = _checks.check_positive_int("size", size, odd=True)
        self.sigma = _checks.check_fraction("sigma", sigma, allow_zero=True)
        # After a ReLU |a| = a, and the gradient is the same (a ReLU passes
        # no gradient where a = 0).
        self.nonnegative_inputs = _checks.check_bool(
            "nonnegative_inputs", nonnegative_inputs)

    def build(self, input_shape):
        _checks.check_image_rank(self, input_shape)

    def _window_sum(self, x):
        # Zero-padded sum over the neighbourhood: pad, then a valid average
        # pool times its area (a "same" average pool would not count the
        # padding as zeros at the borders).
        half = self.size // 2
        x = ops.pad(x, ((0, 0), (half, half), (half, half), (0, 0)))
        pooled = ops.average_pool(x, self.size, strides=1, padding="valid")
        return pooled * float(self.size * self.size)

    def suppression_field(self, activations):
        """The channel-averaged field `S`, shape `(N, H, W, 1)`, float32."""
        a = ops.cast(activations, "float32")
        magnitude = a if self.nonnegative_inputs else ops.abs(a)
        if self.field == "linf":
            return ops.mean(window_max(magnitude, self.size), axis=-1, keepdims=True)
        if self.field == "l1":
            # The window sum is linear: average the channels first.
            return self._window_sum(ops.mean(magnitude, axis=-1, keepdims=True))
        s = ops.sqrt(self._window_sum(a * a))
        return ops.mean(s, axis=-1, keepdims=True)

    def call(self, inputs):
        field = self.suppression_field(inputs)
        peak = ops.max(field, axis=(1, 2), keepdims=True)
        # Only inside `surrogates.surrogate_gradients()` (BPDA): same value,
        # smooth gradient.
        peak = surrogates.with_surrogate(peak, surrogates.max_surrogate(field, (1, 2)))
        # Times the reciprocal of the small (N, H, W, 1) denominator rather
        # than a broadcast division of the full tensor: same value to float
        # rounding, and TFLite's int8 graph then has a MUL (XNNPACK) where
        # a broadcast DIV ran ~30x slower in the reference kernel
        # (`python -m benchmarks.tflite_ops`).
        outputs = ops.cast(inputs, "float32") * reciprocal_denominator(
            field, peak, self.sigma)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "field": self.field,
            "size": self.size,
            "sigma": self.sigma,
            "nonnegative_inputs": self.nonnegative_inputs,
        }


def window_max(magnitude, size):
    """The `size` x `size` stride-1 "same" max pool of a tensor `>= 0`.

    On JAX it is a separable maximum of shifted, zero-padded slices (rows,
    then columns): the same values (the inputs are `>= 0`, so zero padding
    is the pool's), and about 3.5x faster in training on XLA's CPU, whose
    max-pool gradient (select-and-scatter) dominated a HaH network's step
    (`python -m benchmarks.backends`). Its gradient differs from the pool's
    only where two different inputs tie for a window's maximum (split
    between them instead of given to one). Elsewhere `ops.max_pool`, which
    TensorFlow and TFLite run as one fast op.
    """
    height, width = magnitude.shape[1], magnitude.shape[2]
    if keras.backend.backend() != "jax" or height is None or width is None:
        return ops.max_pool(magnitude, size, strides=1, padding="same")
    half = size // 2
    padded = ops.pad(magnitude, ((0, 0), (half, half), (0, 0), (0, 0)))
    rows = padded[:, :height]
    for shift in range(1, size):
        rows = ops.maximum(rows, padded[:, shift:shift + height])
    padded = ops.pad(rows, ((0, 0), (0, 0), (half, half), (0, 0)))
    out = padded[:, :, :width]
    for shift in range(1, size):
        out = ops.maximum(out, padded[:, :, shift:shift + width])
    return out
