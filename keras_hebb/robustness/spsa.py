"""SPSA (cleverhans 4.0.0, Uesato et al. 2018) with its Keras 3 shim.

A gradient-free Linf attack that estimates gradients from random +/-delta
probes, one image at a time (cleverhans' limit). cleverhans' `SPSAAdam`
calls `Adam(lr=...)`, which Keras 3 rejects; the shim (`_SPSAAdam`)
builds it with `learning_rate=` (a variable, so one traced graph serves
every budget) and `_spsa_graph` runs cleverhans' `projected_optimization`
inside one `tf.function` cached on the model function
(`attacks.cached_graph`); results are projected with `attacks.project`.
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import spsa as _spsa

from keras_hebb.robustness.attacks import cached_graph, project


class _SPSAAdam(_spsa.SPSAAdam):
    """cleverhans' SPSAAdam, built with Keras 3's `learning_rate=`."""

    def __init__(self, lr=0.01, delta=0.01, num_samples=128, num_iters=1):
        import keras

        keras.optimizers.Adam.__init__(self, learning_rate=lr)
        if num_samples % 2:
            raise ValueError(f"SPSA needs an even number of samples. Received: {num_samples}")
        # A variable, so one traced graph serves every learning rate.
        self.lr = tf.Variable(float(lr), trainable=False, dtype=tf.float32)
        self._delta = delta
        self._num_samples = num_samples // 2  # mirrored +/- delta
        self._num_iters = num_iters
        self._compare_to_analytic_grad = False


def _spsa_graph(model_fn, image_shape, steps, samples, delta):
    def build():
        optimizer = _SPSAAdam(0.01, delta, samples)

        def loss_fn(images, label):
            # Untargeted: minimize (true logit - best other logit).
            logits = model_fn(images)
            return -_spsa.margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

        @tf.function(input_signature=[
            tf.TensorSpec((1,) + image_shape, tf.float32),
            tf.TensorSpec((1,), tf.int64),
            tf.TensorSpec((), tf.float32),
        ])
        def run(image, label, eps):
            return _spsa.projected_optimization(
                loss_fn, image, label, eps, steps, optimizer,
                clip_min=0.0, clip_max=1.0, early_stop_loss_threshold=0.0,
            )

        return run, optimizer

    return cached_graph(model_fn, ("spsa", image_shape, steps, samples, delta), build)


def spsa(model_fn, x, y, eps, steps=20, samples=64, learning_rate=None, delta=0.01,
         progress=None):
    """SPSA (gradient-free, Linf, cleverhans), one image at a time.

    Estimates gradients from `samples` random +/-delta probes per step, so
    it does not need the model's gradients at all (Uesato et al. 2018).
    Stops early on an image once it is misclassified.

    Args:
        model_fn: from `attacks.make_model_fn`.
        x, y: images in [0, 1] and integer labels.
        eps: Linf budget.
        steps: Adam steps. Defaults to `20`.
        samples: probes per step (even). Defaults to `64`.
        learning_rate: Adam step; `None` uses `2.5 * eps / steps`.
        delta: probe size. Defaults to `0.01`.
        progress: called after each image (progress bars).
    """
    if eps == 0:
        return np.array(x, np.float32)
    run, optimizer = _spsa_graph(model_fn, tuple(x.shape[1:]), int(steps), int(samples),
                                 float(delta))
    if learning_rate is None:
        learning_rate = 2.5 * eps / steps
    optimizer.lr.assign(float(learning_rate))
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = run(tf.constant(x[i:i + 1]), tf.constant(y[i:i + 1], tf.int64),
                     tf.constant(eps, tf.float32)).numpy()[0]
        if progress is not None:
            progress()
    return project(x, out, "linf", eps)
