"""Adversarial training's backend code on TensorFlow.

`adversarial_batch` crafts the examples `HebbianModel(adversarial=...)`
trains on: the images' gradient comes from a `tf.GradientTape`, the random
starts from stateless random ops keyed by `(optimizer.iterations,
replica)`. Under a `tf.distribute` strategy each replica crafts its own
share of the batch.
"""

import keras
import tensorflow as tf

from keras_hebb import _trainers


def adversarial_batch(model, data):
    """The batch `data` with its images replaced by adversarial examples."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    adversarial = adversarial_examples(model, x, y, sample_weight)
    return keras.utils.pack_x_y_sample_weight(adversarial, y, sample_weight)


def adversarial_examples(model, x, y, sample_weight=None):
    """The adversarial examples of `model.adversarial` for a batch.

    The attack's forward passes run with `training=True` inside a
    `keras.StatelessScope`: the model as it trains, but no variable (batch
    norm's moving statistics, metrics) is updated and no layer loss (the
    HaH terms) enters the attack's loss, the compiled loss alone. Returns
    images in [0, 1], within `eps` of `x`, without a gradient path to `x`.
    """
    x = tf.convert_to_tensor(x)
    if not model.built:
        # Variables cannot be created inside the attack's stateless scope.
        model(x, training=False)

    def input_gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            with keras.StatelessScope():
                y_pred = model(images, training=True)
                loss = model.compute_loss(x=images, y=y, y_pred=y_pred,
                                          sample_weight=sample_weight, training=True)
        return tape.gradient(loss, images)

    return _trainers.adversarial_examples(
        x, model.adversarial, _random_start(model, x), input_gradient)


def _random_start(model, x):
    options = model.adversarial
    if not options["random_start"]:
        return tf.zeros_like(x)
    replica = tf.distribute.get_replica_context()
    replica_id = 0 if replica is None else replica.replica_id_in_sync_group
    seed = tf.stack([
        tf.cast(model.optimizer.iterations, tf.int64),
        tf.cast(replica_id, tf.int64) + _trainers.RANDOM_START_SALT])
    uniform_seed, normal_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    return _trainers.random_start(
        x, options["norm"], options["eps"],
        uniform=lambda shape: tf.random.stateless_uniform(shape, uniform_seed, dtype=x.dtype),
        normal=lambda shape: tf.random.stateless_normal(shape, normal_seed, dtype=x.dtype))


def with_clean_state(model, state, clean_images, step):
    """`step()` (a training step on the crafted batch), with the model's
    non-trainable state (batch-norm moving statistics) afterwards that of
    a training-mode forward pass on `clean_images` from the state before
    the step, as if the clean batch had been the one trained on."""
    del state  # TensorFlow's step has no state arguments: it is the variables.
    variables = model.non_trainable_variables
    model(clean_images, training=True)
    clean = [tf.identity(v.value) for v in variables]
    logs = step()
    for variable, value in zip(variables, clean):
        variable.assign(value)
    return logs
