"""`SimilarityMatchingModel`: `model.fit` with local Hebbian/anti-Hebbian rules."""

import numbers

import keras
import tensorflow as tf

from keras_hebb import _compat
from keras_hebb._context import collect_similarity_matching
from keras_hebb.layers.deep_similarity_matching import DeepSimilarityMatching
from keras_hebb.layers.similarity_matching import SimilarityMatching

_SM_TYPES = (SimilarityMatching, DeepSimilarityMatching)


@keras.saving.register_keras_serializable(package="keras_hebb")
class SimilarityMatchingModel(keras.Model):
    """A functional Keras model whose similarity-matching layers learn locally.

    Build it like a functional `keras.Model` from inputs and outputs that
    contain `SimilarityMatching`, `StructuredSimilarityMatching` or
    `DeepSimilarityMatching` layers. Each `train_step`:

    1. runs the model once: every similarity-matching layer settles to the
       fixed point of its neural dynamics and records its input and states;
    2. if the model was compiled with a loss, applies the optimizer to the
       gradient of that loss with respect to the *trainable* weights (a
       classifier head, say). The similarity-matching weights are
       non-trainable unless a layer was built with `train_by_backprop=True`,
       so no supervised gradient reaches them;
    3. if `local_updates`, changes each similarity-matching weight by its
       local rule with rate `eta_t = learning_rate(step)`:
       `W += eta_t (y x^T - W)`, `M += (eta_t / tau) (y y^T - M)`
       (batch-averaged), where `x` and `y` are that synapse's own pre- and
       post-synaptic activities. No backpropagation is involved.

    `fit` and `evaluate` log `sm_objective` (the sum over similarity-matching
    layers of their minibatch objective, computed before the update; see
    `keras_hebb.layers.similarity_matching_rules.gram_objective`), `sm_residual`
    (the largest natural residual of the dynamics) and `sm_learning_rate`,
    plus `loss` and the compiled metrics when there are labels. Compile with
    no loss (`model.compile()`) and call `fit(x)` without labels for purely
    unsupervised learning. Single device only: under a `tf.distribute`
    strategy the Hebbian statistics would need an all-reduce first.

    Example:

    >>> inputs = keras.Input((20,))
    >>> outputs = keras_hebb.layers.SimilarityMatching(4)(inputs)
    >>> model = SimilarityMatchingModel(inputs, outputs, learning_rate=0.01)
    >>> model.compile()
    >>> model.fit(np.random.rand(64, 20).astype("float32"), epochs=1,
    ...           verbose=0).history["sm_objective"]  # doctest: +SKIP

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        learning_rate: the local rate `eta`: a number > 0 or a
            `keras.optimizers.schedules.LearningRateSchedule` of the local
            step count (e.g. `InverseTimeDecay`). Defaults to `0.01`.
        local_updates: apply the local rules in `train_step`. `False`
            freezes the similarity-matching layers (e.g. to train a
            classifier on learned features). Defaults to `True`.
        **kwargs: `keras.Model` keyword arguments.

    Reference:
        Pehlevan, Sengupta, Chklovskii, Neural Computation 30(1), 2018;
        Obeid, Ramambason, Pehlevan, NeurIPS 2019.
    """

    def __init__(self, *args, learning_rate=0.01, local_updates=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.local_updates = bool(local_updates)
        self._sm_layers = [
            layer
            for layer in _compat.all_layers(self)
            if isinstance(layer, _SM_TYPES)
        ]
        if not self._sm_layers:
            raise ValueError(
                "SimilarityMatchingModel needs at least one SimilarityMatching, "
                "StructuredSimilarityMatching or DeepSimilarityMatching layer. "
                f"Received layers: {[layer.name for layer in self.layers]}"
            )
        self.local_step = keras.Variable(
            0, dtype="int64", trainable=False, name="local_step"
        )
        self._objective_tracker = keras.metrics.Mean(name="sm_objective")
        self._residual_tracker = keras.metrics.Mean(name="sm_residual")
        self._rate_tracker = keras.metrics.Mean(name="sm_learning_rate")

    @property
    def similarity_matching_layers(self):
        """The similarity-matching layers, in model order."""
        return list(self._sm_layers)

    def current_learning_rate(self):
        """`eta` at the current local step (a float32 tensor)."""
        schedule = keras.optimizers.schedules.LearningRateSchedule
        if isinstance(self.learning_rate, schedule):
            return tf.cast(self.learning_rate(self.local_step), "float32")
        return tf.constant(self.learning_rate, "float32")

    def _forward(self, x, training):
        with collect_similarity_matching() as scope:
            y_pred = self(x, training=training)
        records = []
        for layer in self._sm_layers:
            if layer.name not in scope.records:
                raise ValueError(
                    f"Similarity-matching layer '{layer.name}' was not called "
                    "in the forward pass."
                )
            inputs, states, residual = scope.records[layer.name]
            inputs = tf.stop_gradient(inputs)
            states = [tf.stop_gradient(s) for s in states]
            records.append((layer, inputs, states, tf.stop_gradient(residual)))
        return y_pred, records

    def _track(self, records, batch, rate):
        objective = tf.add_n([
            layer.objective(inputs, states) for layer, inputs, states, _ in records
        ])
        residual = tf.reduce_max(tf.stack([r for *_, r in records]))
        self._objective_tracker.update_state(objective, sample_weight=batch)
        self._residual_tracker.update_state(residual, sample_weight=batch)
        self._rate_tracker.update_state(rate, sample_weight=batch)

    def compile(self, optimizer="default", loss=None, **kwargs):
        """As `keras.Model.compile`; without a loss the default is no optimizer.

        `model.compile()` sets up purely local learning (nothing for an
        optimizer to do); with a loss the default optimizer is RMSprop, as
        in Keras.
        """
        if isinstance(optimizer, str) and optimizer == "default":
            optimizer = None if loss is None else "rmsprop"
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # Keras skips models with a custom `compile` when loading; this one
        # only changes a default, so restore the compiled state as Keras does.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _has_loss(self):
        return self.loss is not None

    def _results(self, x, y, y_pred, sample_weight):
        if y is not None and self._has_loss():
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        supervised = y is not None and self._has_loss()
        if supervised and self.optimizer is None:
            raise ValueError(
                "SimilarityMatchingModel was compiled with a loss but no "
                "optimizer. Received: optimizer=None"
            )
        with tf.GradientTape() as tape:
            y_pred, records = self._forward(x, training=True)
            if supervised:
                loss = self.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=True,
                )
                _compat.loss_tracker(self).update_state(loss, sample_weight=batch)
                if self.optimizer is not None:
                    loss = self.optimizer.scale_loss(loss)
        if supervised and self.trainable_weights:
            weights = self.trainable_weights
            gradients = tape.gradient(loss, weights)
            self.optimizer.apply_gradients(zip(gradients, weights))
        rate = self.current_learning_rate()
        self._track(records, batch, rate)
        if self.local_updates:
            for layer, inputs, states, _ in records:
                for variable, delta in layer.local_updates(inputs, states):
                    variable.assign_add(tf.cast(rate * delta, variable.dtype))
            self.local_step.assign_add(1)
        return self._results(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        y_pred, records = self._forward(x, training=False)
        if y is not None and self._has_loss():
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                training=False,
            )
            _compat.loss_tracker(self).update_state(loss, sample_weight=batch)
        self._track(records, batch, self.current_learning_rate())
        return self._results(x, y, y_pred, sample_weight)

    def get_config(self):
        rate = self.learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = keras.optimizers.schedules.serialize(rate)
        return {
            **super().get_config(),
            "learning_rate": rate,
            "local_updates": self.local_updates,
        }


def _check_learning_rate(value):
    schedules = keras.optimizers.schedules
    if isinstance(value, dict):
        value = schedules.deserialize(value)
    if isinstance(value, schedules.LearningRateSchedule):
        return value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not value > 0:
        raise ValueError(
            "Invalid value for `learning_rate`: expected a number > 0 or a "
            "keras.optimizers.schedules.LearningRateSchedule. "
            f"Received: learning_rate={value!r}"
        )
    return float(value)
