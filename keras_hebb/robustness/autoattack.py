"""AutoAttack's gradient attacks, batched: APGD-CE and APGD-T (targeted DLR).

Written from the paper (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free
attacks"). The Adversarial Robustness Toolbox (ART) has maintained
implementations, but they run eagerly, batch by batch (seconds per image
on a small network here); these run the model's forward and backward pass
in the suite's one `tf.function` (`attacks.make_model_fn`) on whole
batches and keep the bookkeeping in numpy. A test checks that they break
the same images as ART's within a stated tolerance
(tests/test_robustness_autoattack.py). AutoAttack's third component,
Square, is in `square`; the budget and projection helpers here
(`_budgets`, `_per_image`, `_project`) serve both.

Every function takes images in [0, 1] (float32, NHWC), their true labels
and a budget, and returns adversarial examples projected onto the budget
ball and into [0, 1]: for each image the first iterate found that the
model misclassifies, else the iterate with the best loss.
"""

import math

import numpy as np
import tensorflow as tf

from keras_hebb.robustness import attacks

#: APGD momentum, step-size-halving threshold and initial step (x eps),
#: as in Croce & Hein 2020.
APGD_ALPHA = 0.75
APGD_RHO = 0.75
APGD_INITIAL_STEP = 2.0


def dlr_loss(labels, logits, targets=None):
    """Difference of logits ratio (Croce & Hein 2020), to maximize.

    Untargeted: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`; targeted at
    `t`: `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`, with `z_pi` the
    logits sorted in decreasing order. Needs at least 3 (untargeted) or 4
    (targeted) classes.

    Args:
        labels: int tensor `(N,)`, the true classes.
        logits: float tensor `(N, classes)`.
        targets: int tensor `(N,)` of target classes, or None (untargeted).
    """
    classes = logits.shape[-1]
    if classes is not None and classes < (3 if targets is None else 4):
        raise ValueError(f"The DLR loss needs at least {3 if targets is None else 4} "
                         f"classes. Received: {classes} logits")
    labels = tf.cast(labels, tf.int32)
    ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
    mask = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    true_logit = tf.reduce_sum(mask * logits, axis=-1)
    if targets is None:
        other = tf.reduce_max(logits - mask * 1e9, axis=-1)
        return -(true_logit - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    target_logit = tf.reduce_sum(
        tf.one_hot(tf.cast(targets, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
        * logits, axis=-1)
    return -(true_logit - target_logit) / (
        ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def _loss_and_gradient(model_fn, loss, image_shape):
    """A cached `tf.function` (x, y, targets) -> (loss, grad, logits), one
    trace for every batch size."""

    def build():
        @tf.function(input_signature=[
            tf.TensorSpec((None,) + tuple(image_shape), tf.float32),
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None,), tf.int64),
        ])
        def run(x, y, targets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model_fn(x)
                if loss == "ce":
                    value = attacks.cross_entropy_loss(y, logits)
                elif loss == "dlr":
                    value = dlr_loss(y, logits)
                else:
                    value = dlr_loss(y, logits, targets)
            return value, tape.gradient(value, x), logits

        return run

    return attacks.cached_graph(model_fn, ("apgd", loss, tuple(image_shape)), build)


def _budgets(eps, n):
    """`eps` (a number or one per image) as a float32 array `(n,)`."""
    e = np.broadcast_to(np.asarray(eps, np.float32), (n,)).astype(np.float32)
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"Invalid budget: expected numbers >= 0. Received: eps={eps!r}")
    return e


def _per_image(values, ndim):
    return values.reshape((-1,) + (1,) * (ndim - 1))


def _project(x, adversarial, norm, eps):
    """Onto the `norm` ball of radius `eps` (`(N,)`) around `x`, then into
    [0, 1]; L2 shrinks a hair below eps so float32 rounding stays inside."""
    delta = adversarial - x
    e = _per_image(eps, x.ndim)
    if norm == "linf":
        delta = np.clip(delta, -e, e)
    else:
        length = np.sqrt(np.sum(delta.reshape(len(delta), -1).astype(np.float64) ** 2, axis=1))
        factor = np.minimum(1.0, eps * (1 - 1e-6) / np.maximum(length, 1e-12))
        delta = delta * _per_image(factor, x.ndim).astype(np.float32)
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


def _random_start(x, norm, eps, rng, seeds=None):
    # `seeds`: one per image, each image's draw from its own generator
    # (independent of the other images in the batch); else from `rng`.
    shape = x.shape
    if seeds is not None:
        draw = np.random.Generator.uniform if norm == "linf" else \
            np.random.Generator.standard_normal
        args = (-1.0, 1.0) if norm == "linf" else ()
        t = np.stack([draw(np.random.default_rng(seed), *args, shape[1:]) for seed in seeds]
                     ).astype(np.float32) if len(seeds) else np.zeros(shape, np.float32)
        scale = (np.abs(t).reshape(len(t), -1).max(axis=1) if norm == "linf"
                 else np.sqrt(np.sum(t.reshape(len(t), -1) ** 2, axis=1)))
    elif norm == "linf":
        t = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        scale = np.abs(t).reshape(len(t), -1).max(axis=1)
    else:
        t = rng.standard_normal(shape).astype(np.float32)
        scale = np.sqrt(np.sum(t.reshape(len(t), -1) ** 2, axis=1))
    t = t / _per_image(np.maximum(scale, 1e-12), x.ndim)
    return _project(x, x + _per_image(eps, x.ndim) * t, norm, eps)


def checkpoints(steps):
    """APGD's step-size checkpoints `w_j = ceil(p_j * steps)`, with
    `p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    points = sorted({int(math.ceil(v * steps - 1e-9)) for v in p if v <= 1})
    return [w for w in points if 0 < w < steps]


def _direction(gradient, norm):
    if norm == "linf":
        return np.sign(gradient)
    length = np.sqrt(np.sum(gradient.reshape(len(gradient), -1) ** 2, axis=1))
    return gradient / np.maximum(length, 1e-12).reshape((-1,) + (1,) * (gradient.ndim - 1))


def _apgd_batch(run, x, y, targets, eps, norm, steps, rng, seeds=None):
    n = len(x)
    shape = (-1,) + (1,) * (x.ndim - 1)
    y_t = tf.constant(y, tf.int64)
    t_t = tf.constant(targets, tf.int64)

    def evaluate(points, rows=None):
        # Only `rows` (the images not fooled yet) cost a forward and
        # backward pass: a fooled image's result is fixed (its first
        # misclassified iterate), and every image's iterates depend on its
        # own gradients only; the others keep their last values.
        if rows is None:
            value, grad, logits = run(tf.constant(points), y_t, t_t)
            fooled = np.argmax(logits.numpy(), axis=1) != y
            return value.numpy().astype(np.float64), grad.numpy(), fooled
        value, grad = f_current.copy(), g_current.copy()
        fooled = np.zeros(n, bool)
        if len(rows):
            v, g, logits = run(tf.constant(points[rows]), tf.gather(y_t, rows),
                               tf.gather(t_t, rows))
            value[rows] = v.numpy()
            grad[rows] = g.numpy()
            fooled[rows] = np.argmax(logits.numpy(), axis=1) != y[rows]
        return value, grad, fooled

    found = x.copy()
    success = np.zeros(n, bool)

    def record(points, fooled):
        new = fooled & ~success
        found[new] = points[new]
        success[new] = True

    x0 = _random_start(x, norm, eps, rng, seeds)
    f0, g0, fooled = evaluate(x0)
    record(x0, fooled)
    step = (APGD_INITIAL_STEP * eps).astype(np.float32)
    x1 = _project(x, x0 + step.reshape(shape) * _direction(g0, norm), norm, eps)
    f1, g1, fooled = evaluate(x1)
    record(x1, fooled)
    better = f1 > f0
    f_max = np.where(better, f1, f0)
    x_max = np.where(better.reshape(shape), x1, x0)
    g_max = np.where(better.reshape(shape), g1, g0)
    previous, current, f_current, g_current = x0, x1, f1, g1
    increases = better.astype(np.int64)  # counts f(x(i+1)) > f(x(i)) since last checkpoint
    marks = set(checkpoints(steps))
    last_mark, reduced_at_mark, f_max_at_mark = 0, np.zeros(n, bool), f0.copy()
    for k in range(1, steps):
        z = _project(x, current + step.reshape(shape) * _direction(g_current, norm), norm, eps)
        following = _project(
            x, current + APGD_ALPHA * (z - current) + (1 - APGD_ALPHA) * (current - previous),
            norm, eps)
        f_next, g_next, fooled = evaluate(following, np.flatnonzero(~success))
        record(following, fooled)
        increases += f_next > f_current
        improved = f_next > f_max
        f_max = np.where(improved, f_next, f_max)
        x_max = np.where(improved.reshape(shape), following, x_max)
        g_max = np.where(improved.reshape(shape), g_next, g_max)
        previous, current, f_current, g_current = current, following, f_next, g_next
        if k in marks:
            condition1 = increases < APGD_RHO * (k - last_mark)
            # Step size unchanged at the last checkpoint and no better loss.
            condition2 = ~reduced_at_mark & (f_max <= f_max_at_mark)
            halve = condition1 | condition2
            step = np.where(halve, step / 2, step).astype(np.float32)
            # Restart the halved ones from the best point, without momentum.
            h = halve.reshape(shape)
            current = np.where(h, x_max, current)
            previous = np.where(h, x_max, previous)
            g_current = np.where(h, g_max, g_current)
            f_current = np.where(halve, f_max, f_current)
            increases[:] = 0
            last_mark, reduced_at_mark, f_max_at_mark = k, halve, f_max.copy()
    return np.where(success.reshape(shape), found, x_max), success


def apgd(model_fn, x, y, eps, norm="linf", steps=100, loss="ce", targets=None,
         restarts=1, seed=0, batch_size=256, start_seeds=None):
    """Auto-PGD (Croce & Hein 2020), untargeted or targeted.

    Step size `2 * eps` halved at the checkpoints `checkpoints(steps)` when
    fewer than 75% of the steps since the last one raised the loss, or when
    neither the step nor the best loss changed; momentum 0.75; random start
    in the ball; each restart runs only on the images not yet fooled.

    Args:
        model_fn: from `attacks.make_model_fn`.
        x, y: images in [0, 1] and integer labels.
        eps: budget in pixel space: a number, or one per image.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.
        steps: iterations (each one forward and backward pass). Defaults
            to `100` (AutoAttack's).
        loss: `"ce"` (cross-entropy), `"dlr"` (untargeted DLR) or
            `"dlr_targeted"` (needs `targets`). Defaults to `"ce"`.
        targets: int array `(N,)`: target classes for `"dlr_targeted"`.
        restarts: random restarts. Defaults to `1`.
        seed: seeds the random starts. Defaults to `0`.
        batch_size: images per batch. Defaults to `256`.
        start_seeds: one tuple of ints per image: its random starts come
            from `np.random.default_rng((*start_seeds[i], restart))` alone,
            whatever other images run with it. `None`: from `seed` for the
            whole batch. Defaults to `None`.

    Returns:
        `(adversarial, fooled)`: numpy examples in budget and [0, 1], and
        whether the attack saw the model misclassify each one.
    """
    _check_apgd_arguments(norm, loss, targets, steps, restarts)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    targets = np.zeros_like(y) if targets is None else np.asarray(targets, np.int64)
    eps = _budgets(eps, len(x))
    out = x.copy()
    fooled = np.zeros(len(x), bool)
    if not len(x) or not np.any(eps > 0):
        return out, fooled
    run = _loss_and_gradient(model_fn, loss, x.shape[1:])
    rng = np.random.default_rng(seed)
    for restart in range(restarts):
        todo = np.flatnonzero(~fooled)
        for s in range(0, len(todo), batch_size):
            part = todo[s:s + batch_size]
            seeds = None if start_seeds is None else [
                (*tuple(start_seeds[i]), restart) for i in part]
            adversarial, success = _apgd_batch(run, x[part], y[part], targets[part], eps[part],
                                               norm, steps, rng, seeds)
            keep = success | ~fooled[part]
            out[part[keep]] = adversarial[keep]
            fooled[part] |= success
    return _project(x, out, norm, eps), fooled


def _check_apgd_arguments(norm, loss, targets, steps, restarts):
    if norm not in attacks.NORMS:
        raise ValueError(f"Invalid value for `norm`: expected 'linf' or 'l2'. Received: norm={norm!r}")
    if loss not in ("ce", "dlr", "dlr_targeted"):
        raise ValueError(f"Invalid value for `loss`: expected 'ce', 'dlr' or 'dlr_targeted'. Received: loss={loss!r}")
    if loss == "dlr_targeted" and targets is None:
        raise ValueError("Invalid `targets`: `loss='dlr_targeted'` needs target classes. "
                         "Received: targets=None")
    if steps < 1 or restarts < 1:
        raise ValueError(f"`steps` and `restarts` must be >= 1. Received: steps={steps}, restarts={restarts}")


def top_targets(model_fn, x, y, count, batch_size=512):
    """The `count` most likely wrong classes of each image, most likely first
    (APGD-T's target classes). Returns int64 `(N, count)`."""
    logits = np.concatenate([model_fn(tf.constant(x[s:s + batch_size])).numpy()
                             for s in range(0, len(x), batch_size)]) if len(x) else \
        np.zeros((0, 2), np.float32)
    logits = logits.copy()
    logits[np.arange(len(y)), y] = -np.inf
    order = np.argsort(-logits, axis=1, kind="stable")
    return order[:, :min(count, logits.shape[1] - 1)].astype(np.int64)


def apgd_targeted(model_fn, x, y, eps, norm="linf", steps=100, target_classes=9,
                  restarts=1, seed=0, batch_size=256, start_seeds=None):
    """APGD-T: targeted DLR loss at each of the `target_classes` most likely
    wrong classes in turn, on the images no earlier target fooled
    (AutoAttack's standard version uses 9 targets, 1 restart each).

    Args and returns: as `apgd`; `target_classes` at most `classes - 1`.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    eps = _budgets(eps, len(x))
    out = x.copy()
    fooled = np.zeros(len(x), bool)
    if not len(x) or not np.any(eps > 0):
        return out, fooled
    targets = top_targets(model_fn, x, y, target_classes)
    for j in range(targets.shape[1]):
        todo = np.flatnonzero(~fooled)
        if not len(todo):
            break
        adversarial, success = apgd(model_fn, x[todo], y[todo], eps[todo], norm, steps,
                                    loss="dlr_targeted", targets=targets[todo, j],
                                    restarts=restarts, seed=seed + 1000 * j,
                                    batch_size=batch_size,
                                    start_seeds=None if start_seeds is None else
                                    [(*tuple(start_seeds[i]), j) for i in todo])
        out[todo] = adversarial
        fooled[todo] = success
    return out, fooled
