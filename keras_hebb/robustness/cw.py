"""Carlini-Wagner L2 (cleverhans 4.0.0) with its Keras 3 shim.

cleverhans calls `optimizer.variables()` (a property in Keras 3) and
resets every optimizer variable to zero, which in Keras 3 includes the
learning rate (the attack then stops moving); its trade-off constant has
the shape of the images instead of one value per image, a passed `y`
silently turns the attack targeted, and one optimizer is reused across
batches of different shapes. The shim keeps cleverhans' loss, tanh box
and gradient step and fixes those: one constant per image, a fresh Adam
per binary-search step, untargeted. Minimal distortion, unbounded: the
suite projects its result onto the budget (`attacks.project`).
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import carlini_wagner_l2 as _cw
from cleverhans.tf2.utils import set_with_mask

from keras_hebb.robustness.attacks import _batches


class _CarliniWagnerL2(_cw.CarliniWagnerL2):
    """cleverhans' CW-L2 (loss, tanh box, gradient step) fixed for Keras 3.

    `_attack` is rewritten: one trade-off constant per image, a fresh Keras 3
    Adam per binary-search step (cleverhans zeroed all optimizer variables,
    the learning rate included), true labels passed per batch, untargeted.
    """

    def __init__(self, model_fn, **kwargs):
        super().__init__(model_fn, **kwargs)
        self.targeted = False

    def attack(self, x, y):
        adversarial = np.zeros_like(x)
        for s in _batches(len(x), self.batch_size):
            adversarial[s] = self._attack(x[s], y[s]).numpy()
        return adversarial

    def _attack(self, x, y):
        import keras

        original = tf.constant(x, tf.float32)
        n = original.shape[0]
        y = tf.one_hot(tf.constant(y, tf.int64), self.num_classes)
        labels = tf.cast(tf.argmax(y, axis=1), tf.int32)
        # To tanh space, as cleverhans does.
        w = (original - self.clip_min) / (self.clip_max - self.clip_min)
        w = tf.atanh((tf.clip_by_value(w, 0.0, 1.0) * 2.0 - 1.0) * 0.999999)

        lower = tf.zeros((n,))
        upper = tf.fill((n,), 1e10)
        const = tf.fill((n,), float(self.initial_const))
        best_l2 = tf.fill((n,), 1e10)
        best_attack = original
        modifier = tf.Variable(tf.zeros_like(w), trainable=True)

        for _ in range(self.binary_search_steps):
            modifier.assign(tf.zeros_like(w))
            optimizer = keras.optimizers.Adam(self.learning_rate)
            success = tf.zeros((n,), tf.bool)
            previous = None
            for iteration in range(self.max_iterations):
                x_new, grads, loss, logits, l2_dist = self.gradient(w, y, modifier, const)
                optimizer.apply_gradients([(grads, modifier)])
                if self.abort_early and iteration % ((self.max_iterations // 10) or 1) == 0:
                    if previous is not None and loss > previous * 0.9999:
                        break
                    previous = loss
                pred = tf.cast(tf.argmax(logits + self.confidence * y, axis=1), tf.int32)
                fooled = tf.not_equal(pred, labels)
                success = tf.logical_or(success, fooled)
                better = tf.logical_and(fooled, l2_dist < best_l2)
                best_l2 = set_with_mask(best_l2, l2_dist, better)
                best_attack = tf.where(tf.reshape(better, (-1, 1, 1, 1)), x_new, best_attack)
            # Binary search on the constant, per image.
            upper = tf.where(success, tf.minimum(upper, const), upper)
            lower = tf.where(success, lower, tf.maximum(lower, const))
            bounded = upper < 1e9
            const = tf.where(bounded, (lower + upper) / 2.0, const * 10.0)
        return best_attack


def carlini_wagner_l2(model_fn, x, y, num_classes, steps=100, binary_search_steps=5,
                      learning_rate=0.01, initial_const=0.1, confidence=0.0,
                      batch_size=256):
    """Carlini-Wagner L2 (minimal distortion; unbounded, see `attacks.project`).

    Returns the closest adversarial example found per image, or the image
    itself where the attack failed.
    """
    attack = _CarliniWagnerL2(
        model_fn, batch_size=batch_size, clip_min=0.0, clip_max=1.0,
        binary_search_steps=binary_search_steps, max_iterations=steps,
        abort_early=True, confidence=confidence, initial_const=initial_const,
        learning_rate=learning_rate,
    )
    attack.num_classes = num_classes
    return np.clip(attack.attack(np.asarray(x, np.float32), np.asarray(y)), 0.0, 1.0)
