"""A convolution with a second, layer-local output, on every backend.

A `HaHBlock` needs, from one forward pass, the gradient of the model's
loss with respect to every weight and the gradient of its own HaH cost
with respect to its kernel only (the block input held constant: a local,
synapse-level Hebbian rule). `conv2d_with_local_branch` returns the
convolution twice, `z` and `z_local`, from ONE convolution: a custom
gradient sends the gradient of `z` to the input and the kernel as usual,
and the gradient of `z_local` to the kernel alone.

Keras has no backend-neutral way to write a convolution's two VJPs
(`keras.ops.custom_gradient` would need the kernel's VJP as an op), so the
custom gradient is written once per backend, side by side here:

| backend      | custom gradient                   | the convolution's VJPs              |
|--------------|-----------------------------------|-------------------------------------|
| `tensorflow` | `tf.custom_gradient`              | `Conv2DBackpropInput` / `...Filter` |
| `jax`        | `jax.custom_vjp`                  | `jax.vjp`, unused halves removed    |
|              |                                   | by XLA's dead-code elimination      |
| other        | none: a second convolution of `stop_gradient(inputs)`                   |

Each backend's framework is imported inside its function, so importing
this module imports none of them.
"""

import keras
from keras import ops


def conv2d_with_local_branch(inputs, kernel, strides, padding):
    """Returns `(z, z_local)`, both equal to `conv2d(inputs, kernel)`.

    Gradients reaching `z` flow to `inputs` and `kernel`; gradients
    reaching `z_local` flow to `kernel` only.

    Args:
        inputs: NHWC tensor.
        kernel: HWIO tensor of the same dtype.
        strides: pair of ints.
        padding: `"same"` or `"valid"`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(inputs, kernel, strides, padding)
    if backend == "jax":
        return _jax(inputs, kernel, strides, padding)
    # Other backends (Keras's torch backend, untested here): a second
    # convolution of the held-constant input, same values and gradients.
    z = ops.conv(inputs, kernel, strides=strides, padding=padding)
    z_local = ops.conv(ops.stop_gradient(inputs), kernel, strides=strides, padding=padding)
    return z, z_local


def _tensorflow(inputs, kernel, strides, padding):
    import tensorflow as tf

    strides4 = [1, strides[0], strides[1], 1]
    pad = padding.upper()

    @tf.custom_gradient
    def conv(x, w):
        z = tf.nn.conv2d(x, w, strides=strides4, padding=pad)

        def grad(g_main, g_local):
            if g_main is None:
                g_main = tf.zeros_like(z)
            if g_local is None:
                g_local = tf.zeros_like(z)
            return conv2d_gradients(x, w, g_main, g_main + g_local, strides4, pad)

        return (z, tf.identity(z)), grad

    return conv(inputs, kernel)


def conv2d_gradients(x, w, g_input, g_kernel, strides4, pad):
    """`(dx, dw)` of TensorFlow's `conv2d(x, w)`: `g_input` reaches the
    input, `g_kernel` the kernel (the two kernels TensorFlow's own Conv2D
    gradient uses; also `keras_hebb._fused`'s)."""
    import tensorflow as tf

    dx = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=w, out_backprop=g_input,
        strides=strides4, padding=pad)
    dw = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(w), out_backprop=g_kernel,
        strides=strides4, padding=pad)
    return dx, dw


def _jax(inputs, kernel, strides, padding):
    import jax

    def conv(x, w):
        return ops.conv(x, w, strides=strides, padding=padding)

    @jax.custom_vjp
    def both(x, w):
        z = conv(x, w)
        return z, z

    def forward(x, w):
        z, vjp = jax.vjp(conv, x, w)
        return (z, z), vjp

    def backward(vjp, cotangents):
        g_main, g_local = cotangents
        # Each call computes both halves; under jit the unused one (the
        # kernel's of the first, the input's of the second) is removed.
        dx, _ = vjp(g_main)
        _, dw = vjp(g_main + g_local)
        return dx, dw

    both.defvjp(forward, backward)
    return both(inputs, kernel)
