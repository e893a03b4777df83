"""Memory-lean training path of a HaH block (TensorFlow only).

Autodiff keeps every intermediate tensor of a HaH block for the backward
pass: the ReLU output, the max-pooled suppression field, the normalized
activations, their transposed copy for the threshold, the threshold mask,
and for the HaH cost its ReLU output and weight tensor: about eight
tensors of the block's output size, against three for conv-ReLU-BN.

The two functions here compute the same values with `tf.custom_gradient`
and keep only the conv output `z`, the block output and per-position
scalars; the backward pass recomputes the cheap parts (one max pool, the
cost's weights; no selection), each only after the gradient it serves has
arrived (a control dependency): nothing else orders them, and TensorFlow's
executor would build them at the start of the backward pass and hold them
all through it (that alone made the peak memory of a HaH-VGG16 step at
batch 128 1.6x that of VGG16-BN). Their gradients are the autodiff
gradients of the plain layers, op for op (`MaxPoolGrad` for the field,
ties of the image-wide maximum shared equally as `reduce_max` does);
`tests/test_layers.py` compares both.

`HaHBlock` uses them only when training with TensorFlow and no BPDA
surrogate scope, for the paper's block (`linf` field, fractional
threshold); every other case, inference and export take the plain layers.
"""

from keras_hebb import _backends, _native, _selection
from keras_hebb.layers.divisive_normalization import reciprocal_denominator

_backends.require_tensorflow("keras_hebb._fused (the fused HaH block)")


def relu_normalize_threshold(z, size, sigma, rank):
    """`FractionalThreshold(DivisiveNormalization(relu(z)))`, `linf` field.

    Args:
        z: float32 NHWC conv output.
        size: suppression field window (odd).
        sigma: weight of the image-wide maximum.
        rank: the threshold of each image and channel is its `rank`-th
            largest value (`H * W - k + 1` for `FractionalThreshold`'s k).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def forward(z):
        a = tf.nn.relu(z)
        _, field, peak = _field(a, size)
        inverse = reciprocal_denominator(field, peak, sigma)
        y = _threshold(a * inverse, rank)
        # Kept for the backward pass (1/C of the block's size): the
        # reciprocal denominator and each position's share of the gradient
        # of the image-wide maximum (ties share it equally, as reduce_max).
        ties = tf.cast(tf.equal(field, peak), tf.float32)
        peak_share = sigma * ties / tf.reduce_sum(ties, axis=(1, 2), keepdims=True)

        def backward(dy):
            # Recomputed once dy has arrived: the max pool MaxPoolGrad needs.
            # It pools z, not relu(z): where a window's maximum is positive
            # both pick the same position, and where it is not, the gradient
            # lands where z <= 0 and the ReLU's mask below drops it anyway.
            with tf.control_dependencies([dy]):
                s = tf.nn.max_pool2d(z, size, strides=1, padding="SAME")
            da = tf.where(y > 0.0, dy, 0.0) * inverse  # kept values are > 0
            # u = a / D: dD = -sum_c(dy * u) / D, u = y where y is kept.
            d_denominator = -tf.reduce_sum(dy * y, axis=-1, keepdims=True) * inverse
            d_field = (1.0 - sigma) * d_denominator + peak_share * tf.reduce_sum(
                d_denominator, axis=(1, 2), keepdims=True)
            channels = tf.cast(tf.shape(z)[-1], tf.float32)
            d_s = tf.broadcast_to(d_field / channels, tf.shape(z))
            d_pool = tf.raw_ops.MaxPoolGrad(
                orig_input=z, orig_output=s, grad=d_s, ksize=[1, size, size, 1],
                strides=[1, 1, 1, 1], padding="SAME")
            return da + tf.where(z > 0.0, d_pool, 0.0)

        return y, backward

    return forward(z)


def _field(a, size):
    """`(max-pooled a, channel-mean field S, image-wide max of S)`."""
    import tensorflow as tf

    s = tf.nn.max_pool2d(a, size, strides=1, padding="SAME")
    field = tf.reduce_mean(s, axis=-1, keepdims=True)
    return s, field, tf.reduce_max(field, axis=(1, 2), keepdims=True)


def _threshold(u, rank):
    import tensorflow as tf

    kth = _selection.kth_largest_spatial(u, rank, fast=True)
    return tf.where(u > kth[:, None, None, :], u, 0.0)


def conv_with_hah_cost(inputs, kernel, strides, padding, winners, demote):
    """`(z, cost)`: `z = conv2d(inputs, kernel)` and its HaH cost
    (`keras_hebb.hah_cost.hah_cost` with `K = winners`), the cost's gradient
    reaching only the kernel (layer-local, the inputs held constant).

    One custom gradient for both, so the cost's full-size gradient with
    respect to `z` is built in the backward pass only once the main gradient
    of `z` has arrived, and goes straight into the one kernel-gradient
    convolution (`Conv2DBackpropFilter` of their sum). As two ops (a local
    branch of the conv, then the cost) the executor computed every block's
    cost gradient at the start of the backward pass, since it needs nothing
    from it, and held them all until the convolutions' gradients used them.

    Args:
        inputs: NHWC tensor.
        kernel: HWIO kernel of the same dtype (already unit-normalized).
        strides: pair of ints.
        padding: `"same"` or `"valid"`.
        winners: K, the number of winning channels, `< C`.
        demote: weight of the losers' mean.
    """
    import tensorflow as tf

    from keras_hebb.local_gradient import conv2d_gradients

    strides4 = [1, strides[0], strides[1], 1]
    pad = padding.upper()

    @tf.custom_gradient
    def forward(x, w):
        z = tf.nn.conv2d(x, w, strides=strides4, padding=pad)
        zf = tf.cast(z, tf.float32)
        channels = z.shape[-1]
        lose = demote / float(channels - winners)
        native = _selection.native_ops() is not None
        cost, kth = cost_forward(zf, winners, lose, native)

        def backward(g_main, d_cost):
            if g_main is None:
                g_main = tf.zeros_like(z)
            g_kernel = g_main
            if d_cost is not None:
                # An op of its own (a float32 cast of float32 z is z itself,
                # which a control dependency cannot hold back): the cost's
                # gradient waits for g_main, not only for d_cost, which is
                # ready when the backward pass starts.
                with tf.control_dependencies([g_main]):
                    zf = tf.identity(tf.cast(z, tf.float32))
                d_z = cost_gradient(zf, kth, winners, lose, d_cost, native)
                g_kernel = g_main + tf.cast(d_z, g_main.dtype)
            return conv2d_gradients(x, w, g_main, g_kernel, strides4, pad)

        return (z, cost), backward

    return forward(inputs, kernel)


def cost_forward(z, winners, lose, native):
    """`(cost, kth)` of float32 `z`: the HaH cost (mean over positions) and
    each position's K-th largest ReLU value (with `native`, the native op's:
    one pass per position, no channel axis; else TensorFlow ops, keepdims).

    With r = relu(z): the K-th largest r is relu of the K-th largest z, and
    (kth >= 0) the sum of the top K of r, ties included, is
    sum_c max(z, kth) - (C - K) kth: fewer passes over z than the plain
    cost's weighted sum, the same value to float rounding."""
    import tensorflow as tf

    if native:
        value, kth = _native.hah_cost(z, winners, lose)
        return tf.reduce_mean(value), kth
    channels = z.shape[-1]
    kth = tf.nn.relu(tf.expand_dims(_selection.kth_largest(z, winners), -1))
    top = tf.reduce_sum(tf.maximum(z, kth), axis=-1) - (channels - winners) * kth[..., 0]
    total = tf.reduce_sum(tf.nn.relu(z), axis=-1)
    return tf.reduce_mean((1.0 / winners + lose) * top - lose * total), kth


def cost_gradient(z, kth, winners, lose, d_cost, native):
    """The gradient of `cost_forward`'s cost times `d_cost` with respect to
    `z`, from `z` and its `kth`."""
    import tensorflow as tf

    if native:
        scale = d_cost / tf.cast(tf.size(kth), tf.float32)
        return _native.hah_cost_gradient(z, kth, scale, winners, lose)
    return _cost_gradient(z, kth, winners, lose, d_cost)


def _cost_gradient(z, kth, winners, lose, d_cost):
    """The gradient of the cost with respect to `z`: `winner_weights` times
    the ReLU's mask, scaled by `d_cost / positions`, read off `z` and `kth`
    directly (no ReLU recomputed, no float weight tensors summed up).

    Winners (`z > kth`) weigh `1/K`, losers `-lose`, and the channels tied
    at `kth` share the free winner slots. Where `kth == 0` the ties are
    zeros of the ReLU, whose gradient is 0 whatever their share."""
    import tensorflow as tf

    positions = tf.cast(tf.size(z) // tf.shape(z)[-1], tf.float32)
    scale = d_cost / positions
    above, tied = z > kth, tf.equal(z, kth)
    n_above = tf.reduce_sum(tf.cast(above, tf.float32), axis=-1, keepdims=True)
    n_tied = tf.reduce_sum(tf.cast(tied, tf.float32), axis=-1, keepdims=True)
    share = (winners - n_above) / tf.maximum(n_tied, 1.0)
    tie_weight = (share * (1.0 / winners + lose) - lose) * scale
    loser = tf.where(z > 0.0, -lose * scale, 0.0)
    return tf.where(above, scale / winners, tf.where(tied & (kth > 0.0), tie_weight, loser))
