"""`HebbianModel`'s train and test steps, one module per Keras backend.

As in Keras itself (`keras/src/backend/<backend>/trainer.py`), the step
that differentiates is backend code and everything else is shared:
`HebbianModel` collects the blocks' HaH costs (`HebbianModel._hah_term`)
and each module here turns them into an update.

| backend      | module                | how it differentiates                        |
|--------------|-----------------------|----------------------------------------------|
| `tensorflow` | `tensorflow_trainer`  | `tf.GradientTape`, optimizer updates in place |
| `jax`        | `jax_trainer`         | stateless: `jax.value_and_grad` over the     |
|              |                       | trainable variables, returns new variables   |

Both compute each block's cost on a layer-local copy of its convolution
(the block input held constant), so a cost updates only its own kernel.
"""

import importlib

import keras

#: The Keras backends keras_hebb trains and runs on.
SUPPORTED_BACKENDS = ("tensorflow", "jax")


def check_backend():
    """`RuntimeError` (one line) unless Keras runs a supported backend."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"keras_hebb supports the Keras backends {list(SUPPORTED_BACKENDS)}; "
            f"set KERAS_BACKEND to one of them. Received: KERAS_BACKEND={backend!r}"
        )
    return backend


def for_backend():
    """The step module of the running Keras backend."""
    return importlib.import_module(f"{__name__}.{check_backend()}_trainer")
