"""`HebbianModel` steps on TensorFlow: `tf.GradientTape`, in-place updates.

Under a `tf.distribute` strategy the HaH term is divided by the number of
replicas like the compiled loss (Keras does that for compiled losses only).
With `model.adversarial`, the step trains on the examples
`adversarial_examples` crafts from the batch (see `HebbianModel`).
"""

import keras
import tensorflow as tf

from keras_hebb import _compat, _trainers
from keras_hebb._context import collect_hah_costs


def loss_and_predictions(model, x, y, sample_weight, training, cost_inputs=None):
    """One forward pass: the total loss (compiled loss minus the HaH term)
    and the predictions; updates the `loss` and HaH trackers. With
    `cost_inputs`, the HaH costs are those of a second forward pass on
    them, which updates no state (batch-norm statistics)."""
    if not model.built:
        # A subclassed model builds by calling itself once more, symbolically,
        # on its first call: that call must not record costs (first trace
        # only; functional models are built when constructed).
        model(x, training=training)
    if cost_inputs is None:
        with collect_hah_costs() as scope:
            y_pred = model(x, training=training)
    else:
        y_pred = model(x, training=training)
        with collect_hah_costs() as scope, keras.StatelessScope():
            model(cost_inputs, training=training)
    loss = model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )
    costs, hah_term = model._hah_term(scope)
    # The compiled loss is already divided by the number of replicas;
    # a cost added by hand is not (Keras leaves that to us).
    loss = loss - tf.cast(_compat.scale_loss_for_distribution(hah_term), loss.dtype)
    batch = tf.shape(tf.nest.flatten(x)[0])[0]
    _compat.loss_tracker(model).update_state(
        _compat.unscale_loss_for_distribution(loss), sample_weight=batch
    )
    model._update_hah_trackers(costs, hah_term, batch)
    return loss, y_pred


def adversarial_examples(model, x, y, sample_weight=None):
    """The adversarial examples of `model.adversarial` for a batch.

    The attack's forward passes run with `training=True` inside a
    `keras.StatelessScope`: the model as it trains, but no variable (batch
    norm's moving statistics, metrics) is updated. Returns images in
    [0, 1], within `eps` of `x`, without a gradient path to `x`.
    """
    options = model.adversarial
    x = tf.convert_to_tensor(x)
    if not model.built:
        # Variables cannot be created inside the attack's stateless scope.
        model(x, training=False)
    eps, norm = options["eps"], options["norm"]
    start = tf.zeros_like(x)
    if options["random_start"]:
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        seed = tf.stack([
            tf.cast(model.optimizer.iterations, tf.int64),
            tf.cast(replica_id, tf.int64) + _trainers.RANDOM_START_SALT])
        uniform_seed, normal_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=2))
        start = _trainers.random_start(
            x, norm, eps,
            uniform=lambda shape: tf.random.stateless_uniform(shape, uniform_seed, dtype=x.dtype),
            normal=lambda shape: tf.random.stateless_normal(shape, normal_seed, dtype=x.dtype))
    adversarial = tf.clip_by_value(x + start, 0.0, 1.0)

    def ascend(step, adversarial):
        with tf.GradientTape() as tape:
            tape.watch(adversarial)
            with keras.StatelessScope():
                y_pred = model(adversarial, training=True)
            loss = model.compute_loss(x=adversarial, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
        gradient = tape.gradient(loss, adversarial)
        return step + 1, _trainers.attack_step(x, adversarial, gradient, options)

    _, adversarial = tf.while_loop(
        lambda step, _: step < options["steps"], ascend,
        (tf.constant(0), adversarial))
    return tf.stop_gradient(adversarial)


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    cost_inputs = None
    if model.adversarial is not None:
        if model.adversarial["hah_costs_on"] == "clean" and model.hah_layers:
            cost_inputs = x
        x = adversarial_examples(model, x, y, sample_weight)
    with tf.GradientTape() as tape:
        loss, y_pred = loss_and_predictions(model, x, y, sample_weight, training=True,
                                            cost_inputs=cost_inputs)
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)
    weights = model.trainable_weights
    gradients = tape.gradient(loss, weights)
    model.optimizer.apply_gradients(zip(gradients, weights))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _, y_pred = loss_and_predictions(model, x, y, sample_weight, training=False)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
