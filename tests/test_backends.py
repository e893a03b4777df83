"""keras_hebb on each Keras backend: JAX against TensorFlow.

Keras fixes its backend once per process, so each backend runs this file
as a program in a subprocess with `KERAS_BACKEND` set (`python
tests/test_backends.py OUT_DIR`): it builds the same layers and a tiny
`HebbianModel` from the same numpy weights, takes one SGD step on the same
batch and writes what it computed to `OUT_DIR/<backend>.npz` (the JAX run
also saves its trained model). The tests compare the two runs, then load
the JAX-trained model on TensorFlow and export it with `python -m export`.

Tolerances: the backends run different float32 kernels (TensorFlow's
oneDNN or Eigen and keras_hebb's native selection ops, XLA on JAX), so the
values agree to float rounding: layer outputs (of size ~1) to 1e-5, the
weights after one step to 1e-6 while the HaH costs move them by more than
1e-3 (`test_one_sgd_step_on_jax_equals_tensorflow` checks both).
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (28, 28, 1)
BATCH = 8
ALPHAS = [0.5, 0.3]
LEARNING_RATE = 0.5
LAYER_ATOL = 1e-5
WEIGHT_ATOL = 1e-6

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed")


def _environment(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return env


def _run(args, backend, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_environment(backend),
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{backend: arrays}` of this file run as a program on each backend."""
    out = tmp_path_factory.mktemp("backends")
    results = {}
    for backend in ("tensorflow", "jax"):
        done = _run([os.path.abspath(__file__), str(out)], backend, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[backend] = dict(np.load(out / f"{backend}.npz"))
    results["dir"] = out
    return results


@needs_jax
def test_layer_outputs_on_jax_equal_tensorflow(runs):
    tf_run, jax_run = runs["tensorflow"], runs["jax"]
    layers = sorted(k for k in tf_run if k.startswith("layer:"))
    assert len(layers) == 7
    for key in layers:
        assert np.abs(tf_run[key]).max() > 0.1, key
        np.testing.assert_allclose(jax_run[key], tf_run[key], rtol=0, atol=LAYER_ATOL,
                                   err_msg=key)


@needs_jax
def test_one_sgd_step_on_jax_equals_tensorflow(runs):
    tf_run, jax_run = runs["tensorflow"], runs["jax"]
    weights = sorted(k for k in tf_run if k.startswith("after:"))
    for key in weights:
        np.testing.assert_allclose(jax_run[key], tf_run[key], rtol=0, atol=WEIGHT_ATOL,
                                   err_msg=key)
    # The HaH costs move the blocks' kernels (much more than the tolerance).
    for key in ("after:0", "after:1"):
        assert np.abs(tf_run[key] - tf_run["no_hah_" + key]).max() > 1e-3
    for log in ("loss", "hah_cost", "hah_block1_hah", "hah_block2_hah", "accuracy"):
        np.testing.assert_allclose(jax_run["log:" + log], tf_run["log:" + log],
                                   rtol=1e-5, err_msg=log)
    assert tf_run["log:hah_cost"] > 0.1


@needs_jax
def test_hah_cost_on_jax_reaches_only_its_own_kernel(runs):
    jax_run = runs["jax"]
    # d(cost of block 2) / d(kernel of block 1): the block input is a constant.
    assert np.abs(jax_run["local:block2_on_block1"]).max() == 0.0
    assert np.abs(jax_run["local:block2_on_block2"]).max() > 1e-4


@needs_jax
def test_bit_counting_selection_on_jax_equals_top_k(runs):
    jax_run = runs["jax"]
    for k in (1, 29, 144):
        np.testing.assert_array_equal(jax_run[f"kth:{k}:True"], jax_run[f"kth:{k}:False"])


@needs_jax
def test_model_trained_on_jax_loads_and_exports_on_tensorflow(runs, tmp_path):
    import keras

    import keras_hebb  # noqa: F401 (registers the classes)

    model_path = runs["dir"] / "jax_model.keras"
    model = keras.models.load_model(model_path)
    np.testing.assert_allclose(model.predict(runs["jax"]["images"], verbose=0),
                               runs["jax"]["predictions"], rtol=0, atol=LAYER_ATOL)
    done = _run(["-m", "export", str(model_path), "--out", str(tmp_path / "export"),
                 "--tflite", "float32", "--verify-images", "64"], "tensorflow", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    version = tmp_path / "export" / "1"
    assert (version / "saved_model.pb").is_file()
    assert list(version.rglob("*.tflite"))


def test_unsupported_backend_error_is_one_line():
    done = _run(["-c", "import keras_hebb"], "numpy", timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: keras_hebb supports the Keras backends "
                           "['tensorflow', 'jax', 'torch']"), done.stderr[-2000:]
    assert "Received: KERAS_BACKEND='numpy'" in last


# ------------------------------------------------- the program each backend runs


def _weights_like(variables, rng):
    return [rng.uniform(-0.5, 0.5, v.shape).astype("float32") for v in variables]


def _layer_outputs(rng):
    """The outputs of each layer on the same input, kernels from `rng`."""
    from keras_hebb import layers

    images = rng.uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    activations = np.maximum(rng.normal(size=(2, 12, 12, 8)), 0).astype("float32")
    outputs = {}
    conv = layers.UnitNormConv2D(8)
    conv.build(images.shape)
    conv.set_weights(_weights_like(conv.weights, rng))
    outputs["unit_norm_conv2d"] = conv(images)
    for field in ("linf", "l1", "l2"):
        outputs[f"divisive_normalization_{field}"] = layers.DivisiveNormalization(
            field)(activations)
    outputs["fractional_threshold"] = layers.FractionalThreshold(0.2)(activations)
    outputs["adaptive_threshold"] = layers.AdaptiveThreshold(1.0)(activations)
    block = layers.HaHBlock(8)
    block.build(images.shape)
    block.set_weights(_weights_like(block.weights, rng))
    outputs["hah_block"] = block(images)
    return {f"layer:{k}": np.asarray(v) for k, v in outputs.items()}


def _model(rng_seed, alphas):
    import keras

    from keras_hebb.architectures import build_vgg

    model = build_vgg((4, "M", 6), hah_blocks=2, input_shape=SHAPE, hah_alphas=alphas,
                      dataset="fashion_mnist")
    model.set_weights(_weights_like(model.trainable_weights, np.random.default_rng(rng_seed))
                      + [np.asarray(w) for w in model.non_trainable_weights])
    model.compile(keras.optimizers.SGD(LEARNING_RATE),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _local_gradients(model, images):
    """On JAX: gradients of block 2's HaH cost on the kernels of blocks 1, 2."""
    import jax

    from keras_hebb import collect_hah_costs

    block1, block2 = model.hah_layers
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}

    def block2_cost(values):
        with collect_hah_costs() as scope:
            model.stateless_call(values, non_trainable, images, training=True)
        return scope.costs[block2.name]

    gradients = jax.grad(block2_cost)(trainable)
    return {"local:block2_on_block1": np.asarray(gradients[index[id(block1.conv.kernel)]]),
            "local:block2_on_block2": np.asarray(gradients[index[id(block2.conv.kernel)]])}


def _selections(rng):
    """On JAX: the k-th largest of nonnegative rows by bit counting and by
    `top_k`, with zeros, ties and -0.0 among the values."""
    from keras_hebb import _selection

    x = np.maximum(rng.normal(size=(3, 12, 12, 8)), 0).astype("float32")
    x[0, :6] = 0.0
    x[1, :, :, 0] = -0.0
    x[2, 3:5] = x[2, 5:7]
    arrays = {}
    for k in (1, 29, 144):
        for nonnegative in (True, False):
            arrays[f"kth:{k}:{nonnegative}"] = np.asarray(
                _selection.kth_largest_spatial(x, k, nonnegative=nonnegative))
    return arrays


def _main(out_dir):
    import keras

    import keras_hebb  # noqa: F401

    backend = keras.backend.backend()
    rng = np.random.default_rng(2022)
    arrays = _layer_outputs(rng)
    images = rng.uniform(0, 1, (BATCH, *SHAPE)).astype("float32")
    labels = np.arange(BATCH) % 10
    model = _model(7, ALPHAS)
    logs = model.train_on_batch(images, labels, return_dict=True)
    arrays.update({f"after:{i}": np.asarray(w) for i, w in enumerate(model.trainable_weights)})
    arrays.update({f"log:{k}": np.asarray(v) for k, v in logs.items()})
    if backend == "tensorflow":
        no_hah = _model(7, 0.0)
        no_hah.train_on_batch(images, labels)
        arrays.update({f"no_hah_after:{i}": np.asarray(w)
                       for i, w in enumerate(no_hah.trainable_weights)})
    else:
        arrays.update(_local_gradients(model, images))
        arrays.update(_selections(rng))
        model.save(os.path.join(out_dir, f"{backend}_model.keras"))
        arrays["images"] = images
        arrays["predictions"] = np.asarray(model.predict(images, verbose=0))
    np.savez(os.path.join(out_dir, f"{backend}.npz"), **arrays)


if __name__ == "__main__":
    _main(sys.argv[1])
