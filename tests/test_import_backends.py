"""keras_hebb on JAX without TensorFlow: the import, the layers, the
similarity-matching model, and the one-line errors of the TensorFlow parts.

Each test runs a program in a subprocess with `KERAS_BACKEND=jax` (Keras
fixes its backend once per process) and TensorFlow blocked: a
`sys.meta_path` finder refuses `tensorflow` and names the keras_hebb file
that asked for it, so the install with only the `jax` extra is what runs.
(Not `sys.modules["tensorflow"] = None`: Keras asks whether `"tensorflow"
in sys.modules` to detect a tf.data graph, and would then import it.)
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed")

#: Prepended to every program: refuse TensorFlow, naming who imported it.
BLOCK_TENSORFLOW = """
import sys, traceback

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            callers = [f"{frame.filename}:{frame.lineno}"
                       for frame in traceback.extract_stack()
                       if "keras_hebb" in frame.filename]
            raise ImportError(f"TensorFlow is blocked; imported by {callers}")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
"""


def _run_on_jax(program, *args):
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    code = BLOCK_TENSORFLOW + textwrap.dedent(program)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_import_and_hah_blocks_on_jax_never_import_tensorflow():
    done = _run_on_jax("""
        import keras
        import numpy as np

        import keras_hebb
        from keras_hebb import (architectures, data, errors, layers, plots,
                                pruning, runtime, sparsity, surrogates)
        from keras_hebb.robustness import attack_types, bpda, report, resume

        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            layers.HaHBlock(8),
            layers.HaHBlock(8),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ])
        x = np.random.default_rng(0).random((2, 8, 8, 3), dtype="float32")
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        assert logits.shape == (2, 10) and np.isfinite(logits).all(), logits
        assert keras.backend.backend() == "jax"
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        assert not loaded, loaded
        print("ok")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ok"


def test_tensorflow_only_parts_on_jax_raise_one_line_naming_the_backend():
    done = _run_on_jax("""
        import importlib
        import json

        import keras_hebb
        from keras_hebb import _native, robustness

        attempts = {
            "keras_hebb._fused": lambda: importlib.import_module("keras_hebb._fused"),
            "keras_hebb._native": _native.library,
            "keras_hebb.robustness.attacks": lambda: robustness.attacks,
            "keras_hebb.robustness.suite": lambda: robustness.run_suite,
            "keras_hebb.robustness.noise": lambda: robustness.noise_accuracy,
        }
        errors = {}
        for name, attempt in attempts.items():
            try:
                attempt()
                errors[name] = None
            except Exception as error:
                errors[name] = [type(error).__name__, str(error)]
        print(json.dumps(errors))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for name, error in errors.items():
        assert error is not None, f"{name} loaded on JAX"
        kind, message = error
        assert kind == "RuntimeError", (name, error)
        assert "\n" not in message
        assert name.split(".")[-1] in message
        assert message.endswith("needs the TensorFlow backend of Keras; set "
                                "KERAS_BACKEND=tensorflow. Received: "
                                "KERAS_BACKEND='jax'"), message


def test_data_pipelines_without_tensorflow_say_how_to_install_it():
    done = _run_on_jax("""
        import numpy as np

        from keras_hebb import data

        images = np.zeros((8, 28, 28, 1), "uint8")
        try:
            data.make_dataset(images, np.zeros(8, "int64"), "fashion_mnist",
                              batch_size=4)
        except RuntimeError as error:
            print(error)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [
        "keras_hebb.data.make_dataset (a tf.data pipeline) needs TensorFlow "
        "installed (beside any Keras backend): pip install "
        "'keras-hebb[tensorflow-cpu]'"]


# ------------------------------------------- similarity matching on JAX

#: Builds a similarity-matching network (NSM layer, Dense head) from
#: numpy weights, fits it 3 steps with local rules and a supervised head,
#: unsupervised 2 more, and returns its weights and history. The same
#: code runs in the JAX subprocess and, for reference, on this process's
#: backend (TensorFlow).
SIMILARITY_MATCHING_PROGRAM = """
def fit_similarity_matching(path=None):
    import keras
    import numpy as np

    import keras_hebb

    rng = np.random.default_rng(7)
    x = rng.normal(size=(48, 10)).astype("float32")
    y = rng.integers(0, 3, size=48)
    inputs = keras.Input((10,))
    # Named: the names of unnamed layers depend on what the process built
    # before (the TensorFlow side runs inside the test session).
    similarity = keras_hebb.layers.SimilarityMatching(4, iterations=300,
                                                      tolerance=1e-7, name="similarity")
    head = keras.layers.Dense(3, name="head")
    outputs = head(similarity(inputs))
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.1, 2, 0.5)
    model = keras_hebb.SimilarityMatchingModel(inputs, outputs,
                                               learning_rate=schedule, name="sm")
    kernel = rng.normal(size=(10, 4))
    similarity.set_weights([
        (kernel / np.linalg.norm(kernel, axis=0)).astype("float32"),
        (np.eye(4) + 0.1).astype("float32"),
    ])
    head.set_weights([(0.3 * rng.normal(size=(4, 3))).astype("float32"),
                      np.zeros(3, "float32")])
    model.compile(keras.optimizers.SGD(0.2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    supervised = model.fit(x, y, batch_size=16, epochs=1, shuffle=False,
                           verbose=0).history
    model.compile()
    unsupervised = model.fit(x[:32], batch_size=16, epochs=1, shuffle=False,
                             verbose=0).history
    evaluated = model.evaluate(x, verbose=0, return_dict=True)
    weights = [keras.ops.convert_to_numpy(w).astype("float64").tolist()
               for w in model.weights]
    if path is not None:
        model.save(path)
    return {"weights": weights, "supervised": supervised,
            "unsupervised": unsupervised, "evaluated": evaluated,
            "names": [w.path for w in model.weights],
            "x": x.tolist(), "predicted": model.predict(x, verbose=0).tolist()}
"""


def test_similarity_matching_model_fits_on_jax_as_on_tensorflow(tmp_path):
    path = str(tmp_path / "jax.keras")
    done = _run_on_jax(SIMILARITY_MATCHING_PROGRAM + """
import json
print(json.dumps(fit_similarity_matching(sys.argv[1])))
""", path)
    assert done.returncode == 0, done.stderr[-3000:]
    on_jax = json.loads(done.stdout.strip().splitlines()[-1])

    assert keras.backend.backend() == "tensorflow"
    namespace = {}
    exec(SIMILARITY_MATCHING_PROGRAM, namespace)
    on_tensorflow = json.loads(json.dumps(namespace["fit_similarity_matching"]()))

    assert on_jax["names"] == on_tensorflow["names"]
    for name, got, expected in zip(on_jax["names"], on_jax["weights"],
                                   on_tensorflow["weights"]):
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
    local_step = [n.endswith("local_step") for n in on_jax["names"]].index(True)
    assert on_jax["weights"][local_step] == 5  # 3 + 2 batches
    for run in ("supervised", "unsupervised"):
        assert set(on_jax[run]) == set(on_tensorflow[run])
        for metric, values in on_tensorflow[run].items():
            np.testing.assert_allclose(on_jax[run][metric], values, rtol=1e-4,
                                       atol=1e-6, err_msg=f"{run} {metric}")
    assert set(on_jax["evaluated"]) == set(on_tensorflow["evaluated"])
    # The local rules moved the lateral weights by far more than the tolerance.
    lateral_start = np.eye(4) + 0.1
    lateral = [n.endswith("lateral") for n in on_jax["names"]].index(True)
    assert np.abs(np.array(on_jax["weights"][lateral]) - lateral_start).max() > 1e-2
    # The model trained on JAX loads on TensorFlow and predicts the same.
    loaded = keras.models.load_model(path)
    assert int(loaded.local_step.numpy()) == 5
    np.testing.assert_allclose(loaded.predict(np.array(on_jax["x"]), verbose=0),
                               on_jax["predicted"], atol=1e-5)
