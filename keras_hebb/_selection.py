"""The k-th largest value along the last axis, with a fast TensorFlow path.

`ops.top_k` is portable (every backend, XLA, TFLite's builtin TOPK_V2) but
TensorFlow's CPU kernel keeps a heap per row: for the thresholds of HaH
networks (k = 20% of a row of H*W values) it costs ~3x more than a
selection. keras_hebb's native op (`keras_hebb._native`, built by `make
setup`) returns exactly the same value another 1.7-4x faster, and where it
is not built TensorFlow's `NthElement` (a linear-time `std::nth_element`)
does. Either is used only where it is safe: the TensorFlow backend,
outside XLA (no XLA kernel), on a machine without GPUs (no GPU kernel),
and only when the caller allows it (training and costs; graphs that are
exported keep `top_k`, a TFLite builtin, so the exported model needs no
Flex ops). On the other Keras backends (JAX) every path is `ops.top_k`
(`jax.lax.top_k`, which XLA compiles). For the TFLite files, `keras_hebb._context.integer_threshold()`
swaps `top_k` for counting on int32 bit patterns, in builtin ops: the same
kept values, faster in TFLite.
"""

import functools

import keras
from keras import ops

from keras_hebb import _backends, _compat, _context, _native


def above_kth_largest_by_bits(x, k):
    """`x > t` with `t` the `k`-th largest over height and width of the
    nonnegative NHWC tensor `x` (per image and channel), by counting.

    A nonnegative float32's bit pattern, read as an int32 `y`, orders as
    the float does. The pattern of `t` is the largest `v` with
    `count(y >= v) >= k`; it is built bit by bit, from bit 30 down (31
    counts), and `y > v` holds exactly for the values above `t`: what
    `top_k` keeps, ties included, for every input (-0.0 reads as a
    negative int32: never counted nor kept, like 0.0). In an int8
    TFLite file `x` arrives through `DEQUANTIZE`, `BITCAST`; the rest runs
    in int32. The counts run on a `(N, C, H*W)` copy (TFLite sums a last
    axis faster than the middle axes). TensorFlow backend only.
    """
    _backends.require_tensorflow("keras_hebb._selection.above_kth_largest_by_bits")
    import tensorflow as tf

    _, height, width, channels = x.shape
    y = tf.bitcast(tf.cast(x, tf.float32), tf.int32)
    rows = tf.transpose(tf.reshape(y, (-1, height * width, channels)), (0, 2, 1))
    v = tf.zeros_like(rows[:, :, :1])
    for bit in range(30, -1, -1):
        candidate = v + (1 << bit)
        count = tf.reduce_sum(tf.cast(rows >= candidate, tf.int32), axis=-1, keepdims=True)
        v = tf.where(count >= k, candidate, v)
    return y > tf.reshape(v, (-1, 1, 1, channels))


def kth_largest(x, k, fast=True):
    """`k`-th largest value of `x` along its last axis (shape `x.shape[:-1]`).

    Args:
        x: tensor; the last axis is searched.
        k: int in `[1, x.shape[-1]]`.
        fast: whether the native op or `NthElement` path may be used. All
            paths return the same value. Defaults to `True`.
    """
    if _use_native(fast):
        if native_ops() is not None and x.dtype == "float32":
            return _native.kth_largest(x, k)
        import tensorflow as tf

        return tf.raw_ops.NthElement(input=x, n=k - 1, reverse=True)
    top, _ = ops.top_k(x, k, sorted=False)
    return ops.min(top, axis=-1)


def kth_largest_spatial(x, k, fast=True, nonnegative=False):
    """`k`-th largest over the height and width of an NHWC tensor, per image
    and channel: shape `(N, C)`. The native op reads it in place; the other
    paths select along the last axis of a transposed `(N, C, H*W)` copy.

    Args:
        x: float32 NHWC tensor with known height and width.
        k: int in `[1, H * W]`.
        fast: as for `kth_largest`.
        nonnegative: whether `x >= 0` (after a ReLU). On JAX the value is
            then found by counting on bit patterns (`_kth_largest_by_bits_jax`,
            the same value, ~3.5x faster than `jax.lax.top_k` on XLA's CPU
            for the rows of HaH thresholds). Defaults to `False`.
    """
    if native_ops(fast) is not None and x.dtype == "float32":
        return _native.kth_largest(x, k, spatial=True)
    _, height, width, channels = ops.shape(x)
    flat = ops.transpose(ops.reshape(x, (-1, height * width, channels)), (0, 2, 1))
    if nonnegative and keras.backend.backend() == "jax" and x.dtype == "float32":
        return _kth_largest_by_bits_jax(flat, k)
    return kth_largest(flat, k, fast=fast)


def _kth_largest_by_bits_jax(rows, k):
    """`k`-th largest along the last axis of nonnegative float32 `rows`, by
    counting on int32 bit patterns as `above_kth_largest_by_bits` does (the
    pattern of the value is the largest `v` with `count(y >= v) >= k`;
    -0.0 is never counted): the value `top_k` finds."""
    import jax
    import jax.numpy as jnp

    y = jax.lax.bitcast_convert_type(rows, jnp.int32)
    v = jnp.zeros_like(y[..., :1])
    for bit in range(30, -1, -1):
        candidate = v + (1 << bit)
        count = jnp.sum((y >= candidate).astype(jnp.int32), axis=-1, keepdims=True)
        v = jnp.where(count >= k, candidate, v)
    return jax.lax.bitcast_convert_type(v[..., 0], jnp.float32)


def native_ops(fast=True):
    """keras_hebb's native op module where it may be used (see `kth_largest`
    for where; not inside `keras_hebb._context.without_native()`), else `None`."""
    if not _use_native(fast) or _context.current(_context.WITHOUT_NATIVE):
        return None
    return _native.library()


def _use_native(fast):
    return ((fast or bool(_context.current(_context.FAST_SELECTION)))
            and _native_selection_available())


def _native_selection_available():
    if keras.backend.backend() != "tensorflow" or _has_accelerator():
        return False
    import tensorflow as tf

    if tf.executing_eagerly():
        return True
    return not _compat.in_xla_context(tf.compat.v1.get_default_graph())


@functools.cache
def _has_accelerator():
    import tensorflow as tf

    return any(
        device.device_type != "CPU" for device in tf.config.list_physical_devices()
    )
