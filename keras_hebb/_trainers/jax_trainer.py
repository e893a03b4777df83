"""`HebbianModel` steps on JAX: stateless, as Keras's own JAX trainer.

`train_step(model, state, data)` takes the variable values as arguments
(`state` = trainable, non-trainable, optimizer and metrics variables),
differentiates the total loss with `jax.value_and_grad` over the trainable
values and returns the logs and the new values; Keras's JAX `fit` jits it
and assigns the values back. The forward pass and the compiled loss are
Keras's own `compute_loss_and_updates` (regularization losses, non-trainable
updates such as batch-norm statistics); the HaH costs the blocks record
during that pass are subtracted inside the differentiated function.
"""

import jax
import keras

from keras_hebb import _compat
from keras_hebb._context import collect_hah_costs


def _forward(model, trainable, non_trainable, metrics_vars, optimizer_vars,
             x, y, sample_weight, training):
    """The total loss (unscaled), its scaled value for the gradient, and
    what the metrics need, from the given variable values."""
    with collect_hah_costs() as scope:
        _, (loss, y_pred, non_trainable, metrics_vars) = model.compute_loss_and_updates(
            trainable, non_trainable, metrics_vars, x, y, sample_weight,
            training=training, optimizer_variables=optimizer_vars)
    costs, hah_term = model._hah_term(scope)
    loss = loss - keras.ops.cast(hah_term, loss.dtype)
    scaled = loss
    if training and model.optimizer is not None:
        mapping = list(zip(model.optimizer.variables, optimizer_vars))
        with keras.StatelessScope(state_mapping=mapping):
            scaled = model.optimizer.scale_loss(loss)
    return scaled, (loss, costs, hah_term, y_pred, non_trainable, metrics_vars)


def _update_metrics(model, metrics_vars, loss, costs, hah_term, x, y, y_pred,
                    sample_weight):
    """Logs and new metric variable values (`loss`, `hah_cost`,
    `hah_<block>` and the compiled metrics)."""
    mapping = list(zip(model.metrics_variables, metrics_vars))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        batch = next(i for i in keras.tree.flatten(x) if i is not None).shape[0]
        _compat.loss_tracker(model).update_state(loss, sample_weight=batch)
        model._update_hah_trackers(costs, hah_term, batch)
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
    new_values = []
    for variable in model.metrics_variables:
        value = scope.get_current_value(variable)
        new_values.append(variable.value if value is None else value)
    return logs, new_values


def train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def scaled_loss(trainable_values):
        return _forward(model, trainable_values, non_trainable, metrics_vars,
                        optimizer_vars, x, y, sample_weight, training=True)

    (_, aux), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
    loss, costs, hah_term, y_pred, non_trainable, metrics_vars = aux
    trainable, optimizer_vars = model.optimizer.stateless_apply(
        optimizer_vars, gradients, trainable)
    logs, metrics_vars = _update_metrics(
        model, metrics_vars, loss, costs, hah_term, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def test_step(model, state, data):
    trainable, non_trainable, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _, aux = _forward(model, trainable, non_trainable, metrics_vars, None,
                      x, y, sample_weight, training=False)
    loss, costs, hah_term, y_pred, non_trainable, metrics_vars = aux
    logs, metrics_vars = _update_metrics(
        model, metrics_vars, loss, costs, hah_term, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable, metrics_vars)
