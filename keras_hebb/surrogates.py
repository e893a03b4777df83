"""Surrogate gradients for BPDA: forward pass unchanged, smooth backward pass.

Hard thresholds (top-k masks) and the image-wide maximum in divisive
normalization shatter input gradients, so a plain gradient attack can fail
for numerical reasons. The Backward Pass Differentiable Approximation
(Athalye, Carlini, Wagner 2018) keeps the exact forward pass and takes the
gradient of a smooth surrogate instead.

A layer declares its surrogate by returning `with_surrogate(output,
surrogate)` from `call`. Outside a `surrogate_gradients()` scope this
returns `output` itself (same tensor, same gradient: training, inference
and export are untouched). Inside the scope it returns a tensor whose value
is exactly `output` and whose gradient is the surrogate's:
`stop_gradient(output) + (surrogate - stop_gradient(surrogate))`; the
bracket is exactly zero for finite values.

The scope is read when a function is traced: build a separate
`tf.function` for the surrogate model (`attacks.make_model_fn(model,
surrogate="smooth")` does) and trace it inside the scope.

Example:

>>> class Quantize(keras.layers.Layer):
...     def call(self, x):
...         return with_surrogate(ops.round(x * 4) / 4, x)  # identity grad
>>> with surrogate_gradients():
...     y = model(x)  # value of round(), gradient of the identity
"""

from keras import ops

# The scope itself is a trace-time mode (keras_hebb._context, private);
# `keras_hebb.surrogates.surrogate_gradients` is its one public name
# (`keras_hebb.robustness.bpda` re-exports this module for the attack suite).
from keras_hebb._context import SURROGATE_MODES as MODES
from keras_hebb._context import surrogate_gradients
from keras_hebb._context import surrogate_scope

__all__ = [
    "MODES",
    "has_surrogates",
    "keep_above",
    "max_surrogate",
    "surrogate_gradients",
    "threshold_surrogate",
    "with_surrogate",
]


def with_surrogate(output, surrogate):
    """`output`, with the gradient of `surrogate` inside a surrogate scope.

    Args:
        output: the exact forward value.
        surrogate: a tensor of the same shape whose gradient stands in for
            `output`'s, or a callable `scope -> tensor` (evaluated only
            inside a scope, so it costs nothing elsewhere).

    Returns:
        `output` itself outside a scope; inside, a tensor equal to `output`
        whose gradient is `surrogate`'s.
    """
    scope = surrogate_scope()
    if scope is None:
        return output
    if callable(surrogate):
        surrogate = surrogate(scope)
    scope.uses += 1
    surrogate = ops.cast(surrogate, output.dtype)
    return ops.stop_gradient(output) + (surrogate - ops.stop_gradient(surrogate))


def keep_above(x, threshold):
    """`x * [x > threshold]` for the threshold layers (written as
    `ops.where(x > threshold, x, 0.0)`, which stays int8 in TFLite), with
    `threshold_surrogate`'s gradient inside a surrogate scope (BPDA)."""
    return with_surrogate(ops.where(x > threshold, x, 0.0),
                          threshold_surrogate(x, threshold))


def threshold_surrogate(x, threshold):
    """Surrogate of `x * [x > threshold]` for the threshold layers.

    Returns a callable for `with_surrogate`: the identity in `"identity"`
    mode, `x * sigmoid((x - threshold) / tau)` in `"smooth"` mode with
    `tau = temperature * mean_{h,w} |x|` per image and channel.
    """

    def build(scope):
        if scope.mode == "identity":
            return x
        scale = ops.stop_gradient(ops.mean(ops.abs(x), axis=(1, 2), keepdims=True))
        tau = scope.temperature * scale + 1e-6
        return x * ops.sigmoid((x - threshold) / tau)

    return build


def max_surrogate(values, axis):
    """Surrogate of `max(values, axis, keepdims=True)`: a log-sum-exp.

    `tau * logsumexp(values / tau)` with `tau = temperature * max|values|`
    spreads the gradient over the near-maximal positions instead of one.
    """

    def build(scope):
        peak = ops.stop_gradient(ops.max(ops.abs(values), axis=axis, keepdims=True))
        tau = scope.temperature * peak + 1e-6
        return tau * ops.logsumexp(values / tau, axis=axis, keepdims=True)

    return build


def has_surrogates(model, input_shape):
    """Whether calling `model` on `input_shape` inputs applies any surrogate."""
    import numpy as np

    with surrogate_gradients() as scope:
        model(np.zeros((1,) + tuple(input_shape), "float32"), training=False)
    return scope.uses > 0
