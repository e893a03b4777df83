"""Adversarial training's backend code: the input gradient, the random start.

Keras's own trainers take every training step of a `HebbianModel` (the
HaH costs are layer losses, `HaHBlock`); with
`HebbianModel(adversarial=...)` the step first replaces the batch by
adversarial examples. Crafting them needs what Keras has no
backend-neutral API for -- the gradient of the loss with respect to the
images, and stateless random draws keyed by the step -- so that part is
written once per backend, as in Keras itself
(`keras/src/backend/<backend>/trainer.py`); the attack's loop, steps,
projections and starts' shapes are shared here (`keras.ops`).

| backend      | module                | input gradient                               |
|--------------|-----------------------|----------------------------------------------|
| `tensorflow` | `tensorflow_trainer`  | `tf.GradientTape` in a `keras.StatelessScope` |
| `jax`        | `jax_trainer`         | `jax.grad` of `compute_loss_and_updates`      |

Each module's `adversarial_batch(model, *state, data)` returns the batch
the training step takes (TensorFlow: no state; JAX: the step's variable
values).
"""

import importlib
import math

import keras
from keras import ops

#: Half of the random starts' stateless seeds; the other half is the
#: optimizer's step count, so a resumed run draws the same starts.
RANDOM_START_SALT = 26

#: The Keras backends keras_hebb runs and trains on (torch: the layers and
#: their HaH layer losses, `make test-torch`; no adversarial training).
SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")

#: The backends with a module here (adversarial training).
ADVERSARIAL_BACKENDS = ("tensorflow", "jax")


def check_backend(supported=SUPPORTED_BACKENDS, what="keras_hebb"):
    """`RuntimeError` (one line) unless Keras runs a supported backend."""
    backend = keras.backend.backend()
    if backend not in supported:
        raise RuntimeError(
            f"{what} supports the Keras backends {list(supported)}; "
            f"set KERAS_BACKEND to one of them. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    return backend


def for_backend():
    """The module of the running Keras backend."""
    backend = check_backend(ADVERSARIAL_BACKENDS, "keras_hebb's adversarial training")
    return importlib.import_module(f"{__name__}.{backend}_trainer")


def adversarial_examples(x, options, start, input_gradient):
    """`options["steps"]` ascent steps from `clip(x + start)`, each
    projected and clipped (`attack_step`), in a `keras.ops.fori_loop` (a
    loop, not unrolled). `input_gradient(images)`: the loss's gradient
    with respect to the images. No gradient path back to `x`."""
    adversarial = ops.clip(x + start, 0.0, 1.0)

    def ascend(_, adversarial):
        return attack_step(x, adversarial, input_gradient(adversarial), options)

    adversarial = ops.fori_loop(0, options["steps"], ascend, adversarial)
    return ops.stop_gradient(adversarial)


def _l2_norms(t):

    """Per-example L2 norms of a batch, shaped to broadcast against it."""
    axes = tuple(range(1, len(t.shape)))
    return ops.sqrt(ops.sum(ops.square(t), axis=axes, keepdims=True))


def random_start(x, norm, eps, uniform, normal):
    """A uniform draw from the `norm` ball of radius `eps` around 0, one per
    example of `x`, from the backend's `uniform(shape)` (in [0, 1)) and
    `normal(shape)` draws: L-inf, the cube; L2, a Gaussian direction with
    radius `eps * U^(1/d)`."""
    shape = ops.shape(x)
    if norm == "linf":
        return eps * (2.0 * uniform(shape) - 1.0)
    direction = normal(shape)
    dimension = math.prod(x.shape[1:])
    radius = eps * uniform((shape[0],) + (1,) * (len(x.shape) - 1)) ** (1.0 / dimension)
    return radius * direction / ops.maximum(_l2_norms(direction), 1e-12)


def attack_step(x, adversarial, gradient, options):
    """One ascent step of the attack from `adversarial`, projected onto the
    `norm` ball of radius `eps` around `x` and clipped to [0, 1]. The step
    is the steepest one for a linear loss: `step_size * sign(g)` (L-inf) or
    `step_size * g / ||g||_2` per example (L2)."""
    norm, eps, step_size = options["norm"], options["eps"], options["step_size"]
    if norm == "linf":
        moved = adversarial + step_size * ops.sign(gradient)
        delta = ops.clip(moved - x, -eps, eps)
    else:
        moved = adversarial + step_size * gradient / ops.maximum(_l2_norms(gradient), 1e-12)
        delta = moved - x
        delta = delta * ops.minimum(1.0, eps / ops.maximum(_l2_norms(delta), 1e-12))
    return ops.clip(x + delta, 0.0, 1.0)
