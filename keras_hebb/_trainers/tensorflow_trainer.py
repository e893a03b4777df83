"""`HebbianModel` steps on TensorFlow: `tf.GradientTape`, in-place updates.

Under a `tf.distribute` strategy the HaH term is divided by the number of
replicas like the compiled loss (Keras does that for compiled losses only).
With `model.adversarial`, the step trains on the examples
`adversarial_examples` crafts from the batch (see `HebbianModel`).
"""

import keras
import tensorflow as tf

from keras_hebb import _compat
from keras_hebb._context import collect_hah_costs


#: Salt of the random starts' stateless seeds (the other half of the seed
#: is the optimizer's step count).
_RANDOM_START_SALT = 26


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


def _l2_norms(t):
    """Per-example L2 norms of a batch, shaped to broadcast against it."""
    axes = list(range(1, t.shape.rank))
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))


def _random_start(x, norm, eps, seed):
    """A uniform draw from the `norm` ball of radius `eps`, per example."""
    if norm == "linf":
        return tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps, x.dtype)
    # Uniform in the L2 ball: a Gaussian direction, radius eps * U^(1/d).
    normal_seed, radius_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    direction = tf.random.stateless_normal(tf.shape(x), normal_seed, dtype=x.dtype)
    dimension = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    radius = eps * tf.random.stateless_uniform(
        tf.shape(x)[:1], radius_seed, dtype=x.dtype) ** (1.0 / dimension)
    radius = tf.reshape(radius, [-1] + [1] * (x.shape.rank - 1))
    return radius * direction / tf.maximum(_l2_norms(direction), 1e-12)


def _steepest_step(gradient, norm, step_size):
    """The step of size `step_size` that most increases a linear loss:
    `sign(g)` (L-inf) or `g / ||g||_2` per example (L2)."""
    if norm == "linf":
        return step_size * tf.sign(gradient)
    return step_size * gradient / tf.maximum(_l2_norms(gradient), 1e-12)


def _project(delta, norm, eps):
    """`delta` projected onto the `norm` ball of radius `eps`."""
    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    return delta * tf.minimum(1.0, eps / tf.maximum(_l2_norms(delta), 1e-12))


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
    eps, norm, step_size = options["eps"], options["norm"], options["step_size"]
    if options["random_start"]:
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        seed = tf.stack([
            tf.cast(model.optimizer.iterations, tf.int64),
            tf.cast(replica_id, tf.int64) + _RANDOM_START_SALT])
        start = _random_start(x, norm, eps, seed)
    else:
        start = tf.zeros_like(x)
    adversarial = tf.clip_by_value(x + start, 0.0, 1.0)

    def ascend(step, adversarial):
        with tf.GradientTape() as tape:
            tape.watch(adversarial)
            with keras.StatelessScope():
                y_pred = model(adversarial, training=True)
            loss = model.compute_loss(x=adversarial, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
        gradient = tape.gradient(loss, adversarial)
        moved = adversarial + _steepest_step(gradient, norm, step_size)
        return step + 1, tf.clip_by_value(x + _project(moved - x, norm, eps), 0.0, 1.0)

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
