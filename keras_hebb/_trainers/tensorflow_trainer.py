"""`HebbianModel` steps on TensorFlow: `tf.GradientTape`, in-place updates.

Under a `tf.distribute` strategy the HaH term is divided by the number of
replicas like the compiled loss (Keras does that for compiled losses only).
"""

import keras
import tensorflow as tf

from keras_hebb import _compat
from keras_hebb._context import collect_hah_costs


def loss_and_predictions(model, x, y, sample_weight, training):
    """One forward pass: the total loss (compiled loss minus the HaH term)
    and the predictions; updates the `loss` and HaH trackers."""
    if not model.built:
        # A subclassed model builds by calling itself once more, symbolically,
        # on its first call: that call must not record costs (first trace
        # only; functional models are built when constructed).
        model(x, training=training)
    with collect_hah_costs() as scope:
        y_pred = model(x, training=training)
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


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        loss, y_pred = loss_and_predictions(model, x, y, sample_weight, training=True)
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
