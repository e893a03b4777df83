"""Memory-lean training path of a HaH block (TensorFlow only).

Autodiff keeps every intermediate tensor of a HaH block for the backward
pass: the ReLU output, the max-pooled suppression field, the normalized
activations, their transposed copy for the threshold, the threshold mask,
and for the HaH cost its ReLU output and weight tensor: about eight
tensors of the block's output size, against three for conv-ReLU-BN.

The two functions here compute the same values with `tf.custom_gradient`
and keep only the conv output `z`, the block output and per-position
scalars; the backward pass recomputes the cheap element-wise parts (one
max pool, no selection). Their gradients are the autodiff gradients of
the plain layers, op for op (`MaxPoolGrad` for the field, ties of the
image-wide maximum shared equally as `reduce_max` does);
`tests/test_layers.py` compares both.

`HaHBlock` uses them only when training with TensorFlow and no BPDA
surrogate scope, for the paper's block (`linf` field, fractional
threshold); every other case, inference and export take the plain layers.
"""

import tensorflow as tf

from keras_hebb import _selection
from keras_hebb.hah_cost import winner_weights


def relu_normalize_threshold(z, size, sigma, rank):
    """`FractionalThreshold(DivisiveNormalization(relu(z)))`, `linf` field.

    Args:
        z: float32 NHWC conv output.
        size: suppression field window (odd).
        sigma: weight of the image-wide maximum.
        rank: the threshold of each image and channel is its `rank`-th
            largest value (`H * W - k + 1` for `FractionalThreshold`'s k).
    """

    @tf.custom_gradient
    def forward(z):
        a = tf.nn.relu(z)
        _, field, peak = _field(a, size)
        u = a * (1.0 / _denominator(field, peak, sigma))
        y = _threshold(u, rank)

        def backward(dy):
            # Recomputed: the ReLU, the field and the denominator.
            a = tf.nn.relu(z)
            s, field, peak = _field(a, size)
            inverse = 1.0 / _denominator(field, peak, sigma)
            g = tf.where(y > 0.0, dy, 0.0)  # kept values are > 0
            da = g * inverse
            # u = a / D: dD = -sum_c(g * u) / D, u = y where g is non-zero.
            d_denominator = -tf.reduce_sum(g * y, axis=-1, keepdims=True) * inverse
            ties = tf.cast(tf.equal(field, peak), tf.float32)
            d_peak = sigma * tf.reduce_sum(d_denominator, axis=(1, 2), keepdims=True)
            d_field = (1.0 - sigma) * d_denominator + ties * (
                d_peak / tf.reduce_sum(ties, axis=(1, 2), keepdims=True))
            channels = tf.cast(tf.shape(a)[-1], tf.float32)
            d_s = tf.broadcast_to(d_field / channels, tf.shape(a))
            da += tf.raw_ops.MaxPoolGrad(
                orig_input=a, orig_output=s, grad=d_s, ksize=[1, size, size, 1],
                strides=[1, 1, 1, 1], padding="SAME")
            return tf.where(z > 0.0, da, 0.0)

        return y, backward

    return forward(z)


def _field(a, size):
    """`(max-pooled a, channel-mean field S, image-wide max of S)`."""
    s = tf.nn.max_pool2d(a, size, strides=1, padding="SAME")
    field = tf.reduce_mean(s, axis=-1, keepdims=True)
    return s, field, tf.reduce_max(field, axis=(1, 2), keepdims=True)


def _denominator(field, peak, sigma):
    return sigma * peak + (1.0 - sigma) * field + 1e-7


def _threshold(u, rank):
    shape = tf.shape(u)
    flat = tf.transpose(tf.reshape(u, (shape[0], -1, shape[3])), (0, 2, 1))
    kth = _selection.kth_largest(flat, rank, fast=True)
    return tf.where(u > tf.reshape(kth, (-1, 1, 1, shape[3])), u, 0.0)


def hah_cost(z, winners, demote):
    """`keras_hebb.hah_cost.hah_cost(z, ...)` with `K = winners`, keeping
    only `z` and the K-th largest value of each position."""

    @tf.custom_gradient
    def forward(z):
        r = tf.nn.relu(z)
        kth = tf.expand_dims(_selection.kth_largest(r, winners, fast=True), -1)
        weights = winner_weights(r, kth, winners, demote)
        cost = tf.reduce_mean(tf.reduce_sum(r * weights, axis=-1))

        def backward(d_cost):
            r = tf.nn.relu(z)
            positions = tf.cast(tf.size(r) // tf.shape(r)[-1], tf.float32)
            weights = winner_weights(r, kth, winners, demote)
            return tf.where(z > 0.0, weights * (d_cost / positions), 0.0)

        return cost, backward

    return forward(z)
