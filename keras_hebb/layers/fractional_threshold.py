"""Keeps the strongest fraction of each channel's activations."""

import math

import keras
from keras import ops

from keras_hebb import _checks, _context, _selection, surrogates


#: What the threshold does to the values it keeps: keeps them (`"hard"`) or
#: shrinks them by the threshold (`"soft"`).
MODES = ("hard", "soft")


@keras.saving.register_keras_serializable(package="keras_hebb")
class FractionalThreshold(keras.layers.Layer):
    """Keeps, per image and channel, the top `ratio` of the spatial values.

    With `H * W` spatial positions, `k = floor((1 - ratio) * H * W)` and
    `t` the k-th smallest value of the channel in that image, the output is
    `x * [x > t]`: at most `H * W - k` values survive, fewer when values tie
    at `t`. The same rule applies in training and inference. Height and
    width must be known when the layer is built (the number of kept values
    is static, as TFLite, XLA and TPUs need).

    With `mode="soft"` the same values survive, shrunk by `t`:
    `max(x - t, 0)` (soft-thresholding, as in sparse coding). That output is
    a continuous function of the input (`t`, an order statistic, is one
    too), where the hard cut jumps from 0 to `t`: gradient attacks see the
    function as it is, so no surrogate gradient is needed. Its gradient
    flows through `t` as well (to the value at rank `k`, split between tied
    values).

    Example:

    >>> layer = FractionalThreshold(ratio=0.25)
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> int((layer(x) > 0).numpy().sum())
    4

    Args:
        ratio: fraction of values kept, in `(0, 1]`. Defaults to `0.2`.
        nonnegative_inputs: whether the inputs are known to be `>= 0` (after
            a ReLU, as in `HaHBlock`). Such a layer selects by integer
            counting inside `keras_hebb._context.integer_threshold()` (the
            graphs the TFLite export converts): the same kept values.
            Defaults to `False`.
        mode: `"hard"` (`x * [x > t]`, the paper's) or `"soft"`
            (`max(x - t, 0)`). Defaults to `"hard"`.
        **kwargs: Base layer keyword arguments.

    Attributes:
        threshold_rank: once built, `t` is each channel's `threshold_rank`-th
            largest value (`H * W - k + 1`); `None` when `k = 0` (every value
            is kept and the layer is the identity).

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, ratio=0.2, nonnegative_inputs=False, mode="hard", **kwargs):
        super().__init__(**kwargs)
        self.ratio = _checks.check_fraction("ratio", ratio)
        self.nonnegative_inputs = _checks.check_bool(
            "nonnegative_inputs", nonnegative_inputs)
        self.mode = _checks.check_choice("mode", mode, MODES)
        self.threshold_rank = None

    def build(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"Layer '{self.name}' (FractionalThreshold) needs a known "
                f"height and width. Received: input_shape={tuple(input_shape)}"
            )
        positions = height * width
        # round() guards against 0.8 * 100 = 79.99999... style float error.
        dropped = math.floor(round((1.0 - self.ratio) * positions, 6))
        # The k-th smallest is the (positions - k + 1)-th largest.
        self.threshold_rank = positions - dropped + 1 if dropped else None

    def call(self, inputs, training=None):
        rank = self.threshold_rank
        if rank is None:
            return inputs
        x = ops.cast(inputs, "float32")
        if (self.nonnegative_inputs and training is not True
                and _context.integer_threshold_active()):
            # The TFLite export's graphs: the same kept values by
            # integer counting (keras_hebb._selection).
            kept = _selection.above_kth_largest_by_bits(x, rank)
            if self.mode == "soft":
                # For x >= 0 the values not kept are <= t, and t is one of them.
                t = ops.max(ops.where(kept, 0.0, x), axis=(1, 2), keepdims=True)
                return ops.cast(ops.where(kept, x - t, 0.0), self.compute_dtype)
            return ops.cast(ops.where(kept, x, 0.0), self.compute_dtype)
        # A selection, not a sort. In training on TensorFlow/CPU a linear-time
        # selection finds the same value (keras_hebb._selection); elsewhere
        # (inference, export) top_k, a TFLite builtin. No gradient flows
        # through the threshold itself (it only selects).
        kth = _selection.kth_largest_spatial(x, rank, fast=training is True,
                                             nonnegative=self.nonnegative_inputs)
        threshold = ops.stop_gradient(kth[:, None, None, :])
        if self.mode == "soft":
            return ops.cast(ops.relu(x - _differentiable_value(x, threshold)),
                            self.compute_dtype)
        # Inside `surrogates.surrogate_gradients()` (BPDA) only: the same
        # value with a smooth gradient.
        return ops.cast(surrogates.keep_above(x, threshold), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio,
                "nonnegative_inputs": self.nonnegative_inputs, "mode": self.mode}


def _differentiable_value(x, value):
    """`value` (per image and channel, found by a selection that has no
    gradient) as a function of `x`: the mean of the positions of `x` that
    hold it. Same number; its gradient goes to those positions, as the
    derivative of an order statistic does."""
    at_value = ops.cast(ops.equal(x, value), x.dtype)
    count = ops.maximum(ops.sum(at_value, axis=(1, 2), keepdims=True), 1.0)
    return ops.sum(x * at_value, axis=(1, 2), keepdims=True) / count
