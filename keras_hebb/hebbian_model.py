"""`HebbianModel`: a Keras model trained with cross-entropy plus HaH costs."""

import numbers

import keras
import tensorflow as tf

from keras_hebb import _compat
from keras_hebb._context import collect_hah_costs
from keras_hebb.layers.hah_block import HaHBlock

#: Per-layer alphas of the paper's HaH-VGG16 (its six HaH layers).
PAPER_ALPHAS = (0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005)


@keras.saving.register_keras_serializable(package="keras_hebb")
class HebbianModel(keras.Model):
    """A functional Keras model whose training adds layer-wise HaH costs.

    Build it like a functional `keras.Model`, from inputs and outputs that
    contain `HaHBlock` layers. Its `train_step` minimizes

        loss = compiled_loss - sum_l alpha_l * HaH_l

    in one forward pass. The cross-entropy (compiled loss) trains every
    weight end to end; each HaH cost updates only its own block's kernel,
    with the block input held constant (a local, synapse-level
    Hebbian/anti-Hebbian rule, as in the paper's training loop). Under a
    `tf.distribute` strategy the HaH term is scaled by 1/replicas like the
    compiled loss. `fit` and `evaluate` log `loss` (the total above),
    `hah_cost` (the sum of `alpha_l * HaH_l`) and each block's raw cost as
    `hah_<block name>`.

    Example:

    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras_hebb.layers.HaHBlock(8)(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = HebbianModel(inputs, keras.layers.Dense(10)(x), hah_alphas=1e-3)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        hah_alphas: weight of each block's HaH cost: a number for all blocks,
            a list with one number per `HaHBlock` (in model order), or a dict
            from block name to number. `None` uses the paper's schedule
            `PAPER_ALPHAS` (the first ones if there are fewer blocks, its
            last value repeated if there are more). Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments.

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, *args, hah_alphas=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._hah_layers = [
            layer
            for layer in _compat.all_layers(self)
            if isinstance(layer, HaHBlock)
        ]
        self.hah_alphas = _resolve_alphas(
            hah_alphas, [layer.name for layer in self._hah_layers]
        )
        self._hah_total_tracker = keras.metrics.Mean(name="hah_cost")
        self._hah_layer_trackers = [
            keras.metrics.Mean(name=f"hah_{layer.name}")
            for layer in self._hah_layers
        ]

    @property
    def hah_layers(self):
        """The `HaHBlock` layers, in model order."""
        return list(self._hah_layers)

    def _loss_and_costs(self, x, y, sample_weight, training):
        """One forward pass: predictions and the loss with the HaH term."""
        with collect_hah_costs() as scope:
            y_pred = self(x, training=training)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        costs = [scope.costs[layer.name] for layer in self._hah_layers]
        hah_term = tf.zeros((), "float32")
        for alpha, cost in zip(self.hah_alphas, costs):
            hah_term += alpha * cost
        # The compiled loss is already divided by the number of replicas;
        # a cost added by hand is not (Keras leaves that to us).
        loss = loss - tf.cast(_compat.scale_loss_for_distribution(hah_term), loss.dtype)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        _compat.loss_tracker(self).update_state(
            _compat.unscale_loss_for_distribution(loss), sample_weight=batch
        )
        self._hah_total_tracker.update_state(hah_term, sample_weight=batch)
        for tracker, cost in zip(self._hah_layer_trackers, costs):
            tracker.update_state(cost, sample_weight=batch)
        return loss, y_pred

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, y_pred = self._loss_and_costs(x, y, sample_weight, training=True)
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(loss, weights)
        self.optimizer.apply_gradients(zip(gradients, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, y_pred = self._loss_and_costs(x, y, sample_weight, training=False)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "hah_alphas": list(self.hah_alphas)}


def _resolve_alphas(hah_alphas, names):
    """One float per HaH layer name, from a number, a list or a dict."""
    count = len(names)
    if hah_alphas is None:
        schedule = list(PAPER_ALPHAS[:count])
        return schedule + [PAPER_ALPHAS[-1]] * (count - len(schedule))
    if isinstance(hah_alphas, numbers.Real) and not isinstance(hah_alphas, bool):
        alphas = [float(hah_alphas)] * count
    elif isinstance(hah_alphas, dict):
        unknown = sorted(set(hah_alphas) - set(names))
        if unknown:
            raise ValueError(
                f"Invalid value for `hah_alphas`: no HaH layer named {unknown}; "
                f"the model's HaH layers are {names}. Received: "
                f"hah_alphas={hah_alphas!r}"
            )
        missing = [name for name in names if name not in hah_alphas]
        if missing:
            raise ValueError(
                f"Invalid value for `hah_alphas`: no alpha for HaH layers "
                f"{missing}. Received: hah_alphas={hah_alphas!r}"
            )
        alphas = [float(hah_alphas[name]) for name in names]
    elif isinstance(hah_alphas, (list, tuple)):
        if len(hah_alphas) != count:
            raise ValueError(
                f"Invalid value for `hah_alphas`: expected {count} values, one "
                f"per HaH layer {names}. Received: hah_alphas={list(hah_alphas)!r}"
            )
        alphas = [float(a) for a in hah_alphas]
    else:
        raise ValueError(
            "Invalid value for `hah_alphas`: expected None, a number, a list "
            f"or a dict. Received: hah_alphas={hah_alphas!r}"
        )
    if any(a < 0 for a in alphas):
        raise ValueError(
            "Invalid value for `hah_alphas`: alphas must be >= 0. "
            f"Received: hah_alphas={hah_alphas!r}"
        )
    return alphas
