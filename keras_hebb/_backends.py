"""The parts of keras_hebb that need one Keras backend say so in one line.

Layers, models and costs are `keras.ops` and run on every supported
backend; a few parts are TensorFlow code (the native and fused ops, the
robustness attacks, export). They import TensorFlow only when used, and
under another backend they raise `require_tensorflow`'s error instead of
a stack trace from inside TensorFlow (or an `ImportError` where only the
`jax` extra is installed). Others (the `tf.data` pipelines, building the
native ops) need TensorFlow installed but run beside any backend:
`import_tensorflow` says so in one line where it is not.
"""

import keras


def require_tensorflow(feature):
    """`RuntimeError` (one line) naming `feature` unless Keras runs TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{feature} needs the TensorFlow backend of Keras; set "
            f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}"
        )


def import_tensorflow(feature):
    """The `tensorflow` module, or a one-line `RuntimeError` naming `feature`
    where TensorFlow is not installed."""
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError(
            f"{feature} needs TensorFlow installed (beside any Keras backend): "
            "pip install 'keras-hebb[tensorflow-cpu]'"
        ) from None
    return tf
