"""`HebbianModel` steps on JAX: stateless, as Keras's own JAX trainer.

`train_step(model, state, data)` takes the variable values as arguments
(`state` = trainable, non-trainable, optimizer and metrics variables),
differentiates the total loss with `jax.value_and_grad` over the trainable
values and returns the logs and the new values; Keras's JAX `fit` jits it
and assigns the values back. The forward pass and the compiled loss are
Keras's own `compute_loss_and_updates` (regularization losses, non-trainable
updates such as batch-norm statistics); the HaH costs the blocks record
during that pass are subtracted inside the differentiated function.
With `model.adversarial`, `adversarial_examples` first crafts the batch the
step trains on: the same stateless forward pass, differentiated with
respect to the images, its state updates (batch-norm statistics) dropped.
"""

import jax
import keras

from keras_hebb import _compat, _trainers
from keras_hebb._context import collect_hah_costs


def _forward(model, trainable, non_trainable, metrics_vars, optimizer_vars,
             x, y, sample_weight, training, cost_inputs=None):
    """The total loss (unscaled), its scaled value for the gradient, and
    what the metrics need, from the given variable values. With
    `cost_inputs`, the HaH costs are those of a second forward pass on
    them, whose state updates are dropped."""
    if cost_inputs is None:
        with collect_hah_costs() as scope:
            _, (loss, y_pred, new_non_trainable, metrics_vars) = (
                model.compute_loss_and_updates(
                    trainable, non_trainable, metrics_vars, x, y, sample_weight,
                    training=training, optimizer_variables=optimizer_vars))
    else:
        _, (loss, y_pred, new_non_trainable, metrics_vars) = model.compute_loss_and_updates(
            trainable, non_trainable, metrics_vars, x, y, sample_weight,
            training=training, optimizer_variables=optimizer_vars)
        with collect_hah_costs() as scope:
            model.stateless_call(trainable, non_trainable, cost_inputs, training=training)
    non_trainable = new_non_trainable
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


def adversarial_examples(model, state, x, y, sample_weight=None):
    """The adversarial examples of `model.adversarial` for a batch, from
    the variable values `state` (as `train_step`'s); nothing is updated.
    Random starts come from the optimizer's step count, as on TensorFlow
    (other numbers, the same distribution)."""
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    options = model.adversarial
    x = jax.numpy.asarray(x)

    def loss_of_images(images):
        _, (loss, *_) = model.compute_loss_and_updates(
            trainable, non_trainable, metrics_vars, images, y, sample_weight,
            training=True, optimizer_variables=optimizer_vars)
        return loss

    start = jax.numpy.zeros_like(x)
    if options["random_start"]:
        iterations = next(
            value for variable, value in zip(model.optimizer.variables, optimizer_vars)
            if variable is model.optimizer.iterations)
        key = jax.random.fold_in(jax.random.key(_trainers.RANDOM_START_SALT), iterations)
        uniform_key, normal_key = jax.random.split(key)
        start = _trainers.random_start(
            x, options["norm"], options["eps"],
            uniform=lambda shape: jax.random.uniform(uniform_key, shape, x.dtype),
            normal=lambda shape: jax.random.normal(normal_key, shape, x.dtype))
    adversarial = jax.numpy.clip(x + start, 0.0, 1.0)
    gradient_of_loss = jax.grad(loss_of_images)
    for _ in range(options["steps"]):
        adversarial = _trainers.attack_step(
            x, adversarial, gradient_of_loss(adversarial), options)
    return jax.lax.stop_gradient(adversarial)


def train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    cost_inputs = None
    if model.adversarial is not None:
        if model.adversarial["hah_costs_on"] == "clean" and model.hah_layers:
            cost_inputs = x
        x = adversarial_examples(model, state, x, y, sample_weight)

    def scaled_loss(trainable_values):
        return _forward(model, trainable_values, non_trainable, metrics_vars,
                        optimizer_vars, x, y, sample_weight, training=True,
                        cost_inputs=cost_inputs)

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
