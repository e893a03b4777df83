"""2-D convolution with implicitly L2-normalized filters."""

import keras
from keras import ops

from keras_hebb import _checks


@keras.saving.register_keras_serializable(package="keras_hebb")
class UnitNormConv2D(keras.layers.Layer):
    """2-D convolution whose filters are implicitly scaled to unit L2 norm.

    Output channel `c` is the convolution of the input with filter `w_c`
    divided by its L2 norm: `y_c = conv(x, w_c) / (||w_c||_2 + epsilon)`.
    The layer has no bias, so the response of a filter to a patch is the
    projection of the patch on a unit vector: its size says how well the
    patch matches the filter. The division is applied to the (small) kernel,
    not to the (large) output, which is equivalent and cheaper. The norm is
    computed in float32 also under mixed precision.

    Example:

    >>> layer = UnitNormConv2D(8)
    >>> layer(np.zeros((2, 28, 28, 1), "float32")).shape
    (2, 28, 28, 8)

    Args:
        filters: number of output channels.
        kernel_size: int or pair of ints, the filter's height and width.
            Defaults to `3`.
        strides: int or pair of ints. Defaults to `1`.
        padding: `"same"` or `"valid"`. Defaults to `"same"`.
        epsilon: added to the norm before dividing. Defaults to `1e-6`.
        kernel_initializer: initializer of the (unnormalized) kernel.
            Defaults to `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of the kernel.
            Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding="same",
        epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _checks.check_positive_int("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.padding = _checks.check_choice("padding", padding, ("same", "valid"))
        self.epsilon = _checks.check_non_negative("epsilon", epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        if input_shape[-1] is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known number of input channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def normalized_kernel(self):
        """The kernel with each output filter scaled to unit L2 norm."""
        kernel = ops.cast(self.kernel, "float32")
        norm = ops.sqrt(ops.sum(kernel * kernel, axis=(0, 1, 2), keepdims=True))
        return ops.cast(kernel / (norm + self.epsilon), self.compute_dtype)

    def call(self, inputs):
        return ops.conv(
            inputs,
            self.normalized_kernel(),
            strides=self.strides,
            padding=self.padding,
        )

    def call_with_local_branch(self, inputs):
        """Returns `(z, z_local)`: two copies of the output `z`, from one
        convolution.

        Gradients reaching `z` flow to the kernel and to the inputs as usual;
        gradients reaching `z_local` flow to this layer's kernel only, as if
        the inputs were constants (`keras_hebb.local_gradient`). A
        `HaHBlock` computes its layer-local HaH cost on `z_local`, so one
        forward pass serves both losses.
        """
        from keras_hebb.local_gradient import conv2d_with_local_branch

        return conv2d_with_local_branch(
            inputs, self.normalized_kernel(), self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        size = []
        for dim, k, s in zip(input_shape[1:3], self.kernel_size, self.strides):
            if dim is None:
                size.append(None)
            elif self.padding == "same":
                size.append(-(-dim // s))
            else:
                size.append((dim - k) // s + 1)
        return (input_shape[0], *size, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
        }


def _pair(name, value):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(
                f"Invalid value for `{name}`: expected an int or a pair of "
                f"ints. Received: {name}={value!r}"
            )
        return tuple(_checks.check_positive_int(name, v) for v in value)
    v = _checks.check_positive_int(name, value)
    return (v, v)
