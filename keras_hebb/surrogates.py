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

import contextlib
import dataclasses
import threading

from keras import ops

MODES = ("smooth", "identity")


@dataclasses.dataclass
class SurrogateScope:
    """Settings of an active `surrogate_gradients()` scope.

    Attributes:
        mode: `"smooth"`: thresholds back-propagate like
            `x * sigmoid((x - t) / tau)` and maxima like a log-sum-exp;
            `"identity"`: thresholds back-propagate like the identity
            (straight-through), maxima like a log-sum-exp.
        temperature: `tau` relative to the typical size of the values
            (mean absolute value of the channel for thresholds, the maximum
            for maxima).
        uses: how many surrogates were applied since the scope opened
            (0 means the model declares none: BPDA equals plain PGD).
    """

    mode: str = "smooth"
    temperature: float = 0.1
    uses: int = 0


_state = threading.local()


def current_scope():
    """The innermost active `SurrogateScope` of this thread, or `None`."""
    return getattr(_state, "scope", None)


@contextlib.contextmanager
def surrogate_gradients(mode="smooth", temperature=0.1):
    """Context manager: layers called inside use their surrogate gradients.

    Args:
        mode: `"smooth"` or `"identity"`, see `SurrogateScope`.
            Defaults to `"smooth"`.
        temperature: relative smoothing, `> 0`. Defaults to `0.1`.

    Yields:
        The `SurrogateScope` (its `uses` counts applied surrogates).
    """
    if mode not in MODES:
        raise ValueError(
            f"Invalid value for `mode`: expected one of {list(MODES)}. "
            f"Received: mode={mode!r}"
        )
    if not temperature > 0:
        raise ValueError(
            "Invalid value for `temperature`: expected a number > 0. "
            f"Received: temperature={temperature!r}"
        )
    previous = current_scope()
    _state.scope = scope = SurrogateScope(mode, float(temperature))
    try:
        yield scope
    finally:
        _state.scope = previous


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
    scope = current_scope()
    if scope is None:
        return output
    if callable(surrogate):
        surrogate = surrogate(scope)
    scope.uses += 1
    surrogate = ops.cast(surrogate, output.dtype)
    return ops.stop_gradient(output) + (surrogate - ops.stop_gradient(surrogate))


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
