"""A convolution with a second, layer-local output (TensorFlow).

`HebbianModel` needs, from one forward pass, the gradient of cross-entropy
with respect to every weight and the gradient of each layer's HaH cost with
respect to that layer's kernel only (the layer input held constant). A
custom gradient gives both without a second convolution: the backward pass
sends the gradient of the main output to the input, and the sum of both
outputs' gradients to the kernel, using the same two kernels TensorFlow's
own Conv2D gradient uses.
"""

import tensorflow as tf


def conv2d_with_local_branch(inputs, kernel, strides, padding):
    """Returns `(z, z_local)`, both equal to `conv2d(inputs, kernel)`.

    Args:
        inputs: NHWC tensor.
        kernel: HWIO tensor of the same dtype.
        strides: pair of ints.
        padding: `"same"` or `"valid"`.
    """
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
    """`(dx, dw)` of `conv2d(x, w)`: `g_input` reaches the input, `g_kernel`
    the kernel (the two kernels TensorFlow's own Conv2D gradient uses)."""
    dx = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=w, out_backprop=g_input,
        strides=strides4, padding=pad)
    dw = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(w), out_backprop=g_kernel,
        strides=strides4, padding=pad)
    return dx, dw
