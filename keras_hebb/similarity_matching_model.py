"""`SimilarityMatchingModel`: `model.fit` with local Hebbian/anti-Hebbian rules."""

import functools
import numbers

import keras
from keras import ops

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
    unsupervised learning. Runs on the TensorFlow and JAX backends of Keras
    (a model saved on one loads on the other). Single device only: under a
    `tf.distribute` strategy the Hebbian statistics would need an
    all-reduce first.

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
        # "int", as Keras's optimizer step: int64 on TensorFlow, int32 on
        # JAX (whose default configuration has no int64).
        self.local_step = keras.Variable(
            0, dtype="int", trainable=False, name="local_step"
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
            return ops.cast(self.learning_rate(self.local_step), "float32")
        return ops.convert_to_tensor(self.learning_rate, "float32")

    def _records(self, scope):
        """`[(layer, inputs, states, residual)]` of the forward pass that
        `scope` watched, in model order, held constant."""
        records = []
        for layer in self._sm_layers:
            if layer.name not in scope.records:
                raise ValueError(
                    f"Similarity-matching layer '{layer.name}' was not called "
                    "in the forward pass."
                )
            inputs, states, residual = scope.records[layer.name]
            records.append((
                layer,
                ops.stop_gradient(inputs),
                [ops.stop_gradient(s) for s in states],
                ops.stop_gradient(residual),
            ))
        return records

    def _forward(self, x, training):
        with collect_similarity_matching() as scope:
            y_pred = self(x, training=training)
        return y_pred, self._records(scope)

    def _track(self, records, batch, rate):
        objective = functools.reduce(ops.add, [
            layer.objective(inputs, states) for layer, inputs, states, _ in records
        ])
        residual = ops.max(ops.stack([r for *_, r in records]))
        self._objective_tracker.update_state(objective, sample_weight=batch)
        self._residual_tracker.update_state(residual, sample_weight=batch)
        self._rate_tracker.update_state(rate, sample_weight=batch)

    def compile(self, optimizer="default", loss=None, **kwargs):
        """As `keras.Model.compile`; without a loss the default is no optimizer.

        `model.compile()` sets up purely local learning (nothing for an
        optimizer to do); with a loss the default optimizer is RMSprop, as
        in Keras. (On JAX, whose `fit` loop carries an optimizer's state
        whether or not it is used, "no optimizer" is an SGD that no step
        applies.)
        """
        if isinstance(optimizer, str) and optimizer == "default":
            optimizer = None if loss is None else "rmsprop"
        if optimizer is None and loss is not None:
            raise ValueError(
                "SimilarityMatchingModel needs an optimizer to minimize a "
                f"compiled loss. Received: optimizer=None, loss={loss!r}"
            )
        if optimizer is None and keras.backend.backend() == "jax":
            optimizer = keras.optimizers.SGD(0.0)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # Keras skips models with a custom `compile` when loading; this one
        # only changes a default, so restore the compiled state as Keras does.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _supervised(self, y):
        return y is not None and self.loss is not None

    def _local_learning(self, x, y, y_pred, sample_weight, records, loss):
        """What follows the forward pass and the optimizer, in `keras.ops`
        on every backend: logs the loss and the similarity-matching
        metrics, applies the local rules, returns the logs."""
        batch = ops.shape(keras.tree.flatten(x)[0])[0]
        if loss is not None:
            _compat.loss_tracker(self).update_state(loss, sample_weight=batch)
        rate = self.current_learning_rate()
        self._track(records, batch, rate)
        if self.local_updates:
            for layer, inputs, states, _ in records:
                for variable, delta in layer.local_updates(inputs, states):
                    variable.assign_add(ops.cast(rate * delta, variable.dtype))
            self.local_step.assign_add(1)
        if self._supervised(y):
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tensorflow_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._test_step(*args)

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss = None
        with tf.GradientTape() as tape:
            y_pred, records = self._forward(x, training=True)
            if self._supervised(y):
                loss = self.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=True,
                )
                scaled_loss = self.optimizer.scale_loss(loss)
        if loss is not None and self.trainable_weights:
            weights = self.trainable_weights
            gradients = tape.gradient(scaled_loss, weights)
            self.optimizer.apply_gradients(zip(gradients, weights))
        return self._local_learning(x, y, y_pred, sample_weight, records, loss)

    def _test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, records = self._forward(x, training=False)
        batch = ops.shape(keras.tree.flatten(x)[0])[0]
        if self._supervised(y):
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                training=False,
            )
            _compat.loss_tracker(self).update_state(loss, sample_weight=batch)
        self._track(records, batch, self.current_learning_rate())
        if self._supervised(y):
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    # JAX: Keras's JAX trainer passes the variables' values in and takes
    # new ones back (`state`). The gradient of the supervised loss comes
    # from Keras's own stateless loss function; everything after it runs
    # the backend-neutral code above on those values (`StatelessScope`).

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss = None
        if self._supervised(y):
            def loss_and_records(trainable):
                with collect_similarity_matching() as scope:
                    scaled, aux = self.compute_loss_and_updates(
                        trainable, non_trainable, metrics_variables, x, y,
                        sample_weight, training=True,
                        optimizer_variables=optimizer_variables,
                    )
                return scaled, (aux, self._records(scope))

            (_, (aux, records)), gradients = jax.value_and_grad(
                loss_and_records, has_aux=True)(trainable)
            loss, y_pred, non_trainable, metrics_variables = aux
            if self.trainable_weights:
                trainable, optimizer_variables = self.optimizer.stateless_apply(
                    optimizer_variables, gradients, trainable)
        else:
            with collect_similarity_matching() as scope:
                y_pred, non_trainable = self.stateless_call(
                    trainable, non_trainable, x, training=True)
            records = self._records(scope)
        values = (trainable, non_trainable, metrics_variables)
        logs, (trainable, non_trainable, metrics_variables) = self._run_stateless(
            values, self._local_learning, x, y, y_pred, sample_weight, records,
            loss)
        return logs, (trainable, non_trainable, optimizer_variables,
                      metrics_variables)

    def _jax_test_step(self, state, data):
        return self._run_stateless(state, self._test_step, data)

    def _run_stateless(self, values, function, *args):
        """`function(*args)` with the model's trainable, non-trainable and
        metrics variables read from, and assigned to, `values` (three lists
        in that order): returns its result and the new values."""
        groups = (self.trainable_variables, self.non_trainable_variables,
                  self.metrics_variables)
        mapping = [(variable, value) for group, group_values in zip(groups, values)
                   for variable, value in zip(group, group_values)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            result = function(*args)
        new_values = tuple(
            [_value_in(scope, variable, value)
             for variable, value in zip(group, group_values)]
            for group, group_values in zip(groups, values)
        )
        return result, new_values

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


def _value_in(scope, variable, value):
    """`variable`'s value after the `StatelessScope` `scope`: what was
    assigned to it there, else `value`."""
    new = scope.get_current_value(variable)
    return value if new is None else new
