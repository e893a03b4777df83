"""The HaH block: unit-norm conv, ReLU, divisive normalization, threshold."""

import warnings

import keras
from keras import ops

from keras_hebb import _checks, _context
from keras_hebb.hah_cost import hah_cost, winner_count
from keras_hebb.layers.adaptive_threshold import AdaptiveThreshold
from keras_hebb.layers.divisive_normalization import FIELDS, DivisiveNormalization
from keras_hebb.layers.fractional_threshold import MODES, FractionalThreshold
from keras_hebb.layers.unit_norm_conv2d import UnitNormConv2D

THRESHOLDS = ("fractional", "adaptive", None)


@keras.saving.register_keras_serializable(package="keras_hebb")
class HaHBlock(keras.layers.Layer):
    """UnitNormConv2D -> ReLU -> DivisiveNormalization -> threshold.

    The building block of HaH networks: implicitly normalized filters,
    divisive normalization instead of batch norm, and a threshold that keeps
    only the strongest activations.

    In training (`training=True`, as in `fit`) the block adds
    `-alpha * HaH` to its model's losses (`Layer.add_loss`), where `HaH` is
    its Hebbian/anti-Hebbian cost (`keras_hebb.hah_cost`) on the
    convolution output. The cost's gradient reaches only this block's
    kernel, the block input held constant (layer-local learning, as in the
    paper's training loop), from the same convolution as the forward pass
    (`keras_hebb.local_gradient`). So any Keras model with `HaHBlock`s --
    `keras.Sequential`, functional, subclassed -- trains the HaH cost with
    plain `compile` and `fit`, on every backend; `HebbianModel` adds
    per-block cost logging and adversarial training. Under a
    `tf.distribute` strategy Keras divides the term by the number of
    replicas, as it does the compiled loss. Outside
    training (evaluate, predict, export) the block is a plain feed-forward
    layer.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((28, 28, 1)),
    ...     HaHBlock(16, alpha=0.1),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> model(np.random.rand(2, 28, 28, 1).astype("float32")).shape
    (2, 10)

    Args:
        filters: number of output channels.
        kernel_size: int or pair, convolution size. Defaults to `3`.
        strides: int or pair. Defaults to `1`.
        padding: `"same"` or `"valid"`. Defaults to `"same"`.
        normalization_field: `"linf"`, `"l1"`, `"l2"` or `None` (no divisive
            normalization). Defaults to `"linf"`.
        normalization_size: odd neighbourhood side. Defaults to `3`.
        sigma: divisive normalization's weight of the image maximum.
            Defaults to `0.1`.
        threshold: `"fractional"`, `"adaptive"` or `None`. Defaults to
            `"fractional"`.
        threshold_ratio: fraction kept by the fractional threshold.
            Defaults to `0.2`.
        threshold_scale: multiple of the mean used by the adaptive
            threshold. Defaults to `1.0`.
        threshold_mode: what the fractional threshold does to the values it
            keeps: `"hard"` keeps them (the paper's), `"soft"` shrinks them
            by the threshold, `max(x - t, 0)`, a continuous function (see
            `FractionalThreshold`). Defaults to `"hard"`.
        cost_ratio: fraction of winning channels in the HaH cost.
            Defaults to `0.1`.
        cost_demote: weight of the losing channels in the HaH cost.
            Defaults to `1.0`.
        alpha: weight of the HaH cost in the training loss, `>= 0` (`0`:
            no cost). `None` leaves it to the model: a `HebbianModel` sets
            it (the paper's per-layer schedule unless told otherwise); in
            any other model a block with `alpha=None` adds no cost and
            warns when training starts. The paper's values are 0.0045 to
            0.0005 (`keras_hebb.PAPER_ALPHAS`), which change nothing
            measurable on small networks trained for a few epochs; 30x
            them is where the cost acts there (docs/TRAINING.md).
            Defaults to `None`.
        kernel_initializer: initializer of the convolution kernel.
            Defaults to `"glorot_uniform"`.
        use_fused_training: whether training with TensorFlow takes the
            memory-lean path of `keras_hebb._fused` (same values and
            gradients, less memory); `False`: the plain layers, as in
            inference. Defaults to `True`.
        activity_regularizer: Keras's own (`keras.regularizers.get`
            identifiers), on the block's output: e.g.
            `keras.regularizers.L1(1e-4)` adds `1e-4 * sum|output|`, divided
            by the batch size, to the model's losses -- a continuous route
            to sparse activations without the threshold's hard cut
            (docs/TRAINING.md, "Sparse activations without a threshold").
            Unlike the HaH cost its gradient flows through the whole
            network, as every Keras activity regularizer's does. Defaults to
            `None`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: NHWC tensor.
        training: whether the call is part of a training step.

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
        normalization_field="linf",
        normalization_size=3,
        sigma=0.1,
        threshold="fractional",
        threshold_ratio=0.2,
        threshold_scale=1.0,
        threshold_mode="hard",
        cost_ratio=0.1,
        cost_demote=1.0,
        kernel_initializer="glorot_uniform",
        use_fused_training=True,
        alpha=None,
        activity_regularizer=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        # Each argument checked here, under its own name (the sublayers
        # would report theirs: `size`, `ratio`, `scale`), whether or not the
        # part that uses it is switched on.
        self.filters = _checks.check_positive_int("filters", filters)
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.normalization_field = _checks.check_choice(
            "normalization_field", normalization_field, FIELDS + (None,)
        )
        self.normalization_size = _checks.check_positive_int(
            "normalization_size", normalization_size, odd=True)
        self.sigma = _checks.check_fraction("sigma", sigma, allow_zero=True)
        self.threshold = _checks.check_choice("threshold", threshold, THRESHOLDS)
        self.threshold_ratio = _checks.check_fraction("threshold_ratio", threshold_ratio)
        self.threshold_scale = _checks.check_non_negative("threshold_scale", threshold_scale)
        self.threshold_mode = _checks.check_choice("threshold_mode", threshold_mode, MODES)
        self.cost_ratio = _checks.check_fraction("cost_ratio", cost_ratio)
        self.cost_demote = _checks.check_non_negative("cost_demote", cost_demote)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.use_fused_training = _checks.check_bool(
            "use_fused_training", use_fused_training)
        self.alpha = None if alpha is None else _checks.check_non_negative("alpha", alpha)

        self.conv = UnitNormConv2D(
            filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.normalization = self._normalization_part(
            normalization_field, normalization_size, sigma)
        self.threshold_layer = self._threshold_part(
            threshold, threshold_ratio, threshold_scale, threshold_mode)

    def _normalization_part(self, field, size, sigma):
        if field is None:
            return None
        return DivisiveNormalization(
            field=field,
            size=size,
            sigma=sigma,
            nonnegative_inputs=True,  # after a ReLU
            dtype=self.dtype_policy,
            name="normalization",
        )

    def _threshold_part(self, threshold, ratio, scale, mode):
        if threshold == "fractional":
            return FractionalThreshold(
                ratio,
                nonnegative_inputs=True,  # ReLU (and normalization) first
                mode=mode,
                dtype=self.dtype_policy,
                name="threshold",
            )
        if threshold == "adaptive":
            return AdaptiveThreshold(scale, dtype=self.dtype_policy, name="threshold")
        return None

    def build(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        self.conv.build(input_shape)
        output_shape = self.conv.compute_output_shape(input_shape)
        for layer in (self.normalization, self.threshold_layer):
            if layer is not None:
                layer.build(output_shape)

    def _fused_training(self, training):
        """Whether this call may take `keras_hebb._fused` (same values and
        gradients, less memory): TensorFlow training, no BPDA scope."""
        return (training is True and self.use_fused_training
                and keras.backend.backend() == "tensorflow"
                and _context.surrogate_scope() is None)

    def call(self, inputs, training=None):
        scope = _context.hah_cost_scope()
        fused = self._fused_training(training)
        if fused:
            from keras_hebb import _fused
        alpha = self._training_alpha() if training else 0.0
        if training and (alpha > 0 or scope is not None):
            winners = winner_count(self.filters, self.cost_ratio)
            if fused and winners < self.filters:
                z, cost = _fused.conv_with_hah_cost(
                    inputs, self.conv.normalized_kernel(), self.conv.strides,
                    self.conv.padding, winners, self.cost_demote)
            else:
                z, z_local = self.conv.call_with_local_branch(inputs)
                cost = hah_cost(z_local, self.cost_ratio, self.cost_demote)
            if alpha > 0:
                self.add_loss(-alpha * cost)
        else:
            z = self.conv(inputs)
            if scope is not None:
                cost = hah_cost(z, self.cost_ratio, self.cost_demote)
        if scope is not None:
            scope.record(self, cost)
        threshold = self.threshold_layer
        if (fused and self.normalization is not None and self.normalization.field == "linf"
                and isinstance(threshold, FractionalThreshold)
                and threshold.mode == "hard" and threshold.threshold_rank is not None):
            x = _fused.relu_normalize_threshold(
                ops.cast(z, "float32"), self.normalization.size, self.normalization.sigma,
                threshold.threshold_rank)
            return ops.cast(x, self.compute_dtype)
        x = ops.relu(z)
        if self.normalization is not None:
            x = self.normalization(x)
        if self.threshold_layer is not None:
            x = self.threshold_layer(x)
        return x

    def _training_alpha(self):
        if self.alpha is None:
            warnings.warn(
                f"HaHBlock '{self.name}' trains without a HaH cost: its alpha "
                "is None. Set HaHBlock(alpha=...) (30x the paper's values, "
                "e.g. 0.135, acts on small networks) or use a HebbianModel.",
                UserWarning, stacklevel=2)
            return 0.0
        return self.alpha

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "normalization_field": self.normalization_field,
            "normalization_size": self.normalization_size,
            "sigma": self.sigma,
            "threshold": self.threshold,
            "threshold_ratio": self.threshold_ratio,
            "threshold_scale": self.threshold_scale,
            "threshold_mode": self.threshold_mode,
            "cost_ratio": self.cost_ratio,
            "cost_demote": self.cost_demote,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "use_fused_training": self.use_fused_training,
            "alpha": self.alpha,
        }

