"""What a user does first with the installed wheel (not a test module:
`tests/test_packaging.py` runs it with a fresh venv's Python, outside the
checkout, after `python -m keras_hebb._native`).

Imports keras_hebb from site-packages, checks that the native ops built
from the installed package are found, fits `hah_vgg_small` one epoch on
random images, reloads its `.keras` file, exports a SavedModel and a float
TFLite file and checks that both give the Keras model's logits. Prints one
line per step; exits non-zero on the first failure.

Usage: python wheel_smoke.py OUT_DIR
"""

import os
import sys

import numpy as np


def main(out):
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import keras_hebb
    from keras_hebb import _native

    print(f"import: keras_hebb {keras_hebb.__version__} from "
          f"{os.path.dirname(keras_hebb.__file__)} (keras {keras.__version__}, "
          f"tensorflow {tf.__version__})")
    if _native.library() is None:
        sys.exit(f"native ops not found at {_native.library_path()}")
    print(f"native ops: {_native.library_path()}")

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=64)
    model = keras_hebb.architectures.hah_vgg_small(mean=(0.5,), std=(0.25,))
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    print("fit: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in sorted(logs.items())))
    if not all(np.isfinite(v[-1]) for v in logs.values()):
        sys.exit(f"fit logged a non-finite value: {logs}")

    expected = model.predict(x[:4], verbose=0)
    keras_path = os.path.join(out, "model.keras")
    model.save(keras_path)
    reloaded = keras.models.load_model(keras_path)
    _check("reloaded .keras", reloaded.predict(x[:4], verbose=0), expected)

    savedmodel = os.path.join(out, "savedmodel")
    model.export(savedmodel, verbose=False)
    loaded = tf.saved_model.load(savedmodel)  # kept: it owns the variables
    _check("SavedModel", loaded.serve(tf.constant(x[:4])).numpy(), expected)

    converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (source,), (target,) = (interpreter.get_input_details(),
                            interpreter.get_output_details())
    interpreter.set_tensor(source["index"], x[:1])
    interpreter.invoke()
    _check(f"TFLite float32 ({len(content) // 1024} KiB)",
           interpreter.get_tensor(target["index"]), expected[:1])
    print("ok")


def _check(what, logits, expected, tolerance=1e-4):
    error = float(np.max(np.abs(logits - expected)))
    print(f"{what}: max |logits - Keras's| = {error:.2e}")
    if not error <= tolerance:
        sys.exit(f"{what} logits differ from the Keras model's by {error} > {tolerance}")


if __name__ == "__main__":
    main(sys.argv[1])
