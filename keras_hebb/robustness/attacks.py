"""Attacks: cleverhans 4.0.0 wrappers, shared helpers, budgets enforced.

Every attack takes images in [0, 1] (`float32`, NHWC), their true labels
and a budget in pixel space, and returns numpy adversarial examples that
are projected onto the budget ball and clipped to [0, 1] (a final
projection removes float rounding; `check_budget` verifies it). Attacks
are untargeted and use the true labels.

`make_model_fn` turns a Keras model into the one `tf.function` that all
attacks on it share (cleverhans traces per model_fn object: a new lambda
per call retraces every step); with `surrogate=` it is the BPDA model,
whose backward pass uses the layers' declared surrogates.

Here: FGSM, PGD (with restarts and early stop) and MIM, and the helpers
the other attack modules share (losses, projection, budget check, graph
cache, batches, prediction). cleverhans' CW-L2 and SPSA need Keras 3
shims and live in `cw` and `spsa`; AutoAttack's APGD in `autoattack`,
Square in `square`.
"""

import contextlib

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import (
    momentum_iterative_method,
)
from cleverhans.tf2.attacks.projected_gradient_descent import (
    projected_gradient_descent,
)
from cleverhans.tf2.utils import clip_eta, optimize_linear, random_lp_vector

from keras_hebb import _compat, _context
from keras_hebb.robustness import bpda

NORMS = {"linf": np.inf, "l2": 2}
#: Slack allowed by `check_budget` for float32 rounding.
BUDGET_TOLERANCE = 1e-5


def make_model_fn(model, surrogate=None, temperature=0.1):
    """The `tf.function` (images -> float32 logits) that attacks call.

    Args:
        model: a Keras model taking images in [0, 1], returning logits.
        surrogate: `None` for the true gradients, or a `bpda` mode
            (`"smooth"`, `"identity"`) for the BPDA model: same forward
            values, surrogate gradients. Defaults to `None`.
        temperature: surrogate smoothing. Defaults to `0.1`.

    Returns:
        A `tf.function` with a batch-polymorphic input signature, so a new
        batch size does not retrace the model.
    """
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)

    def connected(x, outputs):
        # `+ 0 * sum(x)` leaves the value unchanged but keeps the gradient
        # defined (zero) for a model whose output does not depend
        # differentiably on its input; cleverhans would crash on `None`.
        outputs = tf.cast(outputs, tf.float32)
        return outputs + 0.0 * tf.reduce_sum(x, axis=list(range(1, x.shape.rank)))[:, None]

    if surrogate is None:

        def logits(x):
            # Same values as the model's own call (keras_hebb._selection).
            with _context.fast_selection():
                return connected(x, model(x, training=False))

    else:
        # Validate now, not at trace time.
        with bpda.surrogate_gradients(surrogate, temperature):
            pass

        def logits(x):
            with bpda.surrogate_gradients(surrogate, temperature), \
                    _context.fast_selection():
                return connected(x, model(x, training=False))

    return tf.function(logits, input_signature=[spec])


def cross_entropy_loss(labels, logits):
    """Per-example softmax cross-entropy (the loss to maximize)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def margin_loss(labels, logits):
    """Per-example CW margin `max_{j != y} z_j - z_y` (the loss to maximize).

    Unlike cross-entropy it does not saturate on confidently classified
    images (float32 softmax reaches exactly 1 and the gradient vanishes).
    """
    labels = tf.cast(labels, tf.int32)
    mask = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    true_logit = tf.reduce_sum(mask * logits, axis=-1)
    other = tf.reduce_max(logits - mask * 1e9, axis=-1)
    return other - true_logit


LOSSES = {"ce": cross_entropy_loss, "margin": margin_loss}


def project(x, adversarial, norm, eps):
    """Projects `adversarial` onto the `norm` ball of radius `eps` around
    `x`, then clips to [0, 1] (numpy, float32)."""
    x = np.asarray(x, np.float32)
    delta = np.asarray(adversarial, np.float32) - x
    if norm == "linf":
        delta = np.clip(delta, -eps, eps)
    elif norm == "l2":
        flat = delta.reshape(len(delta), -1)
        length = np.sqrt(np.sum(flat.astype(np.float64) ** 2, axis=1))
        # Shrink a hair below eps so float32 rounding cannot leave the ball.
        factor = np.minimum(1.0, eps * (1 - 1e-6) / np.maximum(length, 1e-12))
        delta = (flat * factor[:, None].astype(np.float32)).reshape(delta.shape)
    else:
        raise ValueError(f"Invalid value for `norm`: expected 'linf' or 'l2'. Received: norm={norm!r}")
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


def distances(x, adversarial, norm):
    """Per-example `norm` distance between `x` and `adversarial`."""
    delta = (np.asarray(adversarial, np.float64) - np.asarray(x, np.float64))
    delta = delta.reshape(len(delta), -1)
    if norm == "linf":
        return np.abs(delta).max(axis=1) if delta.size else np.zeros(len(delta))
    return np.sqrt(np.sum(delta * delta, axis=1))


def check_budget(x, adversarial, norm, eps, tolerance=BUDGET_TOLERANCE):
    """Raises `ValueError` unless every example is in budget and [0, 1].

    An attack that returns an example outside its budget would report a
    robustness number for a larger budget: the suite refuses it.
    """
    adversarial = np.asarray(adversarial)
    if adversarial.shape != np.asarray(x).shape:
        raise ValueError("Invalid adversarial examples: expected the images' shape "
                         f"{np.asarray(x).shape}. Received: shape={adversarial.shape}")
    if not np.all(np.isfinite(adversarial)):
        raise ValueError("Invalid adversarial examples: expected finite values. "
                         "Received: NaN or inf")
    if adversarial.min(initial=0.0) < 0.0 or adversarial.max(initial=0.0) > 1.0:
        raise ValueError("Invalid adversarial examples: expected pixels in [0, 1]. "
                         f"Received: min={adversarial.min():g}, max={adversarial.max():g}")
    worst = distances(x, adversarial, norm).max(initial=0.0)
    if worst > eps + tolerance:
        raise ValueError(f"Invalid adversarial examples: expected a {norm} distance <= "
                         f"{eps:g} (the budget). Received: distance={worst:g}")


@contextlib.contextmanager
def global_seed(seed):
    """TensorFlow's global seed set to `seed` inside, the caller's given back.

    cleverhans' random starts (PGD without `start_seeds`, the transfer
    attack, SPSA's probes) draw from TensorFlow's global generator; the
    suite seeds it for its own calls with the numbers `tf.random.set_seed`
    gives, then restores the caller's global seed and the state of its
    operation seeds, so a notebook's own random draws do not change.
    """
    with _compat.preserved_global_seed():
        tf.random.set_seed(seed)
        yield


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def _step_size(eps, steps, factor=2.5):
    # Madry et al.'s rule of thumb: enough to cross the ball 2.5 times.
    return min(eps, factor * eps / steps)


def fgsm(model_fn, x, y, eps, norm="linf", batch_size=256):
    """Fast gradient (sign) method: one step of size `eps` on the CE loss."""
    out = np.empty_like(x)
    for s in _batches(len(x), batch_size):
        adv = fast_gradient_method(
            model_fn, tf.constant(x[s]), eps, NORMS[norm],
            loss_fn=cross_entropy_loss, clip_min=0.0, clip_max=1.0,
            y=tf.constant(y[s]),
        )
        out[s] = adv.numpy()
    return project(x, out, norm, eps)


def pgd(model_fn, x, y, eps, norm="linf", steps=10, loss="ce", step_size=None,
        random_start=True, batch_size=256, early_stop=False, start_seeds=None):
    """Projected gradient descent (cleverhans), untargeted.

    Args:
        model_fn: from `make_model_fn`.
        x, y: images in [0, 1] and their integer labels.
        eps: budget in pixel space.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.
        steps: iterations. Defaults to `10`.
        loss: `"ce"` (cross-entropy) or `"margin"` (CW margin).
            Defaults to `"ce"`.
        step_size: per-step size; `None` uses `2.5 * eps / steps`.
        random_start: start uniformly inside the ball. Defaults to `True`.
        batch_size: images per batch. Defaults to `256`.
        early_stop: return each image's first iterate that `model_fn`
            misclassifies and stop computing it (cleverhans' own steps,
            random start and projection; images not fooled get cleverhans'
            last iterate). It breaks every image cleverhans' PGD breaks
            and more, for less: only for `model_fn` = the attacked model
            (not a transfer source). Defaults to `False` (cleverhans'
            `projected_gradient_descent`).
        start_seeds: one seed per image (an int or a sequence of ints, as
            `np.random.default_rng` takes) for its random start, drawn
            from cleverhans' distribution (`random_lp_vector`): an image's
            start then depends on its own seed only, not on which other
            images are attacked with it. `None`: cleverhans' draw for the
            batch from TensorFlow's global generator. Defaults to `None`.
    """
    if eps == 0:
        return np.array(x, np.float32)
    loss_fn = LOSSES[loss]
    step = step_size if step_size is not None else _step_size(eps, steps)
    out = np.empty_like(x)
    for s in _batches(len(x), batch_size):
        if early_stop or start_seeds is not None:
            start = None
            if random_start and start_seeds is not None:
                start = random_starts(x[s].shape, norm, eps, start_seeds[s])
            out[s] = _pgd_steps(model_fn, x[s], y[s], eps, step, steps, norm, loss,
                                random_start, start, early_stop)
            continue
        adv = projected_gradient_descent(
            model_fn, tf.constant(x[s]), eps, step, steps, NORMS[norm],
            loss_fn=loss_fn, clip_min=0.0, clip_max=1.0,
            y=tf.constant(y[s]), rand_init=random_start,
        )
        out[s] = adv.numpy()
    return project(x, out, norm, eps)


#: Graphs of model functions that take no attributes, by `id` (with the
#: function, so the id is not reused).
_GRAPHS_BY_ID = {}


def cached_graph(model_fn, key, build):
    """`build()`, made once per `model_fn` and `key`.

    The graphs are kept on `model_fn` itself, so they are freed with it: a
    module-level cache would keep every evaluated model alive (`make
    results` evaluates many in one process). A callable that takes no
    attributes falls back to a module-level cache that holds it.
    """
    cache = getattr(model_fn, "_keras_hebb_graphs", None)
    if cache is None:
        cache = {}
        try:
            model_fn._keras_hebb_graphs = cache
        except (AttributeError, TypeError):
            cache = _GRAPHS_BY_ID.setdefault(id(model_fn), (model_fn, {}))[1]
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _loss_gradient(model_fn, loss, image_shape):
    """A cached `tf.function` (x, y) -> (gradient of the summed loss, logits)."""

    def build():
        @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(image_shape), tf.float32),
                                      tf.TensorSpec((None,), tf.int64)])
        def run(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model_fn(x)
                value = LOSSES[loss](labels=y, logits=logits)
            return tape.gradient(value, x), logits

        return run

    return cached_graph(model_fn, ("loss_gradient", loss, tuple(image_shape)), build)


def random_starts(shape, norm, eps, seeds):
    """Random starts `(n, ...)` from cleverhans' `random_lp_vector`
    distribution (Linf: uniform in the cube; L2: uniform in the ball), image
    `i` drawn from `np.random.default_rng(seeds[i])` alone."""
    dim = int(np.prod(shape[1:]))
    out = np.empty((shape[0], dim), np.float32)
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        if norm == "linf":
            out[i] = rng.uniform(-eps, eps, dim)
        else:
            direction = rng.standard_normal(dim)
            radius = eps * rng.uniform() ** (1.0 / dim)
            out[i] = radius * direction / np.sqrt(np.sum(direction ** 2))
    return out.reshape(shape)


def _pgd_steps(model_fn, x, y, eps, step, steps, norm, loss, random_start, start=None,
               early_stop=True):
    # cleverhans' `projected_gradient_descent` step by step (its random
    # start unless `start` is given, `fast_gradient_method` step and
    # `clip_eta` projection); with `early_stop`, on the images not yet
    # misclassified only.
    order = NORMS[norm]
    run = _loss_gradient(model_fn, loss, x.shape[1:])
    x_t = tf.constant(x)
    if start is not None:
        eta = tf.constant(start, x_t.dtype)
    elif random_start:
        eta = random_lp_vector(tf.shape(x_t), order, tf.cast(eps, x_t.dtype), dtype=x_t.dtype)
    else:
        eta = tf.zeros_like(x_t)
    adversarial = tf.clip_by_value(x_t + clip_eta(eta, order, eps), 0.0, 1.0).numpy()
    active = np.arange(len(x))
    for _ in range(steps):
        gradient, logits = run(tf.constant(adversarial[active]),
                               tf.constant(y[active], tf.int64))
        going = (np.argmax(logits.numpy(), axis=1) == y[active] if early_stop
                 else np.ones(len(active), bool))
        if not going.any():
            return adversarial
        active = active[going]
        current = tf.constant(adversarial[active])
        moved = tf.clip_by_value(
            current + optimize_linear(tf.boolean_mask(gradient, going), step, order), 0.0, 1.0)
        origin = tf.constant(x[active])
        adversarial[active] = tf.clip_by_value(
            origin + clip_eta(moved - origin, order, eps), 0.0, 1.0).numpy()
    return adversarial


def mim(model_fn, x, y, eps, norm="linf", steps=10, decay=1.0, batch_size=256):
    """Momentum iterative method (cleverhans), CE loss, step `eps / steps`."""
    if eps == 0:
        return np.array(x, np.float32)
    out = np.empty_like(x)
    for s in _batches(len(x), batch_size):
        adv = momentum_iterative_method(
            model_fn, tf.constant(x[s]), eps=eps, eps_iter=eps / steps,
            nb_iter=steps, norm=NORMS[norm], clip_min=0.0, clip_max=1.0,
            y=tf.constant(y[s]), decay_factor=decay, sanity_checks=False,
        )
        out[s] = adv.numpy()
    return project(x, out, norm, eps)


def predict(model_fn, x, batch_size=512):
    """Predicted classes of `model_fn` on `x` (numpy int64)."""
    out = []
    for s in _batches(len(x), batch_size):
        out.append(np.argmax(model_fn(tf.constant(x[s])).numpy(), axis=1))
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def input_gradients(model_fn, x, y, loss="margin", batch_size=256):
    """Gradient of the per-example `loss` with respect to the input."""
    loss_fn = LOSSES[loss]
    out = np.empty_like(x)
    for s in _batches(len(x), batch_size):
        xs = tf.constant(x[s])
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value = loss_fn(tf.constant(y[s]), model_fn(xs))
        out[s] = tape.gradient(value, xs).numpy()
    return out
