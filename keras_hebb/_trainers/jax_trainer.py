"""Adversarial training's backend code on JAX.

`adversarial_batch` crafts the examples `HebbianModel(adversarial=...)`
trains on, from the step's variable values (`state`, as Keras's JAX
`train_step` gets them): the images' gradient is `jax.grad` of Keras's own
stateless `compute_loss_and_updates` (its state updates, batch-norm
statistics among them, dropped); the random starts are keyed by the
optimizer's step count, as on TensorFlow (other numbers, the same
distribution).
"""

import jax
import keras

from keras_hebb import _trainers


def adversarial_batch(model, state, data):
    """The batch `data` with its images replaced by adversarial examples;
    nothing is updated."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    adversarial = adversarial_examples(model, state, x, y, sample_weight)
    return keras.utils.pack_x_y_sample_weight(adversarial, y, sample_weight)


def adversarial_examples(model, state, x, y, sample_weight=None):
    """The adversarial examples of `model.adversarial` for a batch, from
    the variable values `state` (as `train_step`'s)."""
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x = jax.numpy.asarray(x)

    def loss_of_images(images):
        # The layers' HaH terms are in this loss, but their gradient never
        # reaches the images (layer-local), so the ascent is the compiled
        # loss's.
        loss, _ = model.compute_loss_and_updates(
            trainable, non_trainable, metrics_vars, images, y, sample_weight,
            training=True, optimizer_variables=optimizer_vars)
        return loss

    return _trainers.adversarial_examples(
        x, model.adversarial, _random_start(model, optimizer_vars, x),
        jax.grad(loss_of_images))


def _random_start(model, optimizer_vars, x):
    options = model.adversarial
    if not options["random_start"]:
        return jax.numpy.zeros_like(x)
    iterations = next(
        value for variable, value in zip(model.optimizer.variables, optimizer_vars)
        if variable is model.optimizer.iterations)
    key = jax.random.fold_in(jax.random.key(_trainers.RANDOM_START_SALT), iterations)
    uniform_key, normal_key = jax.random.split(key)
    return _trainers.random_start(
        x, options["norm"], options["eps"],
        uniform=lambda shape: jax.random.uniform(uniform_key, shape, x.dtype),
        normal=lambda shape: jax.random.normal(normal_key, shape, x.dtype))


def with_clean_state(model, state, clean_images, step):
    """`step(*state)` (a training step on the crafted batch), its new
    non-trainable values (batch-norm moving statistics) replaced by those
    of a training-mode forward pass on `clean_images` from `state` (the
    step's arguments: one tuple of variable values)."""
    (trainable, non_trainable, _, _), = state
    _, clean = model.stateless_call(trainable, non_trainable, clean_images, training=True)
    logs, (trainable, _, optimizer_vars, metrics_vars) = step(*state)
    return logs, (trainable, clean, optimizer_vars, metrics_vars)
