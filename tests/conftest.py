"""Test setup: quiet TensorFlow, oneDNN on, two logical CPUs for strategies.

Everything here runs before TensorFlow is first imported by a test.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices let MirroredStrategy tests run on one CPU.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_SUMMARY_LINES = []

# With oneDNN capped below this CPU's own instruction set
# (`ONEDNN_MAX_CPU_ISA=AVX2` on an Intel guest with AVX-512 FP16/AMX),
# TensorFlow still sends float16 convolutions to oneDNN, which then fails to
# build them ("could not create a primitive descriptor"). A real AVX2 CPU
# never sends them (TensorFlow runs them with Eigen; the suite's float16
# tests passed on an AMD EPYC guest), so the cap cannot stand in for one
# there: those tests are skipped under it, and run in the other passes.
_FLOAT16_CONV_UNDER_ISA_CAP = (bool(os.environ.get("ONEDNN_MAX_CPU_ISA"))
                               and os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "float16_conv: runs float16 convolutions (skipped under ONEDNN_MAX_CPU_ISA)")


def pytest_collection_modifyitems(config, items):
    if not _FLOAT16_CONV_UNDER_ISA_CAP:
        return
    skip = pytest.mark.skip(reason="float16 convolutions fail in oneDNN under "
                                   "ONEDNN_MAX_CPU_ISA (not on a real AVX2 CPU)")
    for item in items:
        if "float16_conv" in item.keywords:
            item.add_marker(skip)


def _small_cnn(seed=0, before=None, after_first=None):
    """The attack tests' small CNN on 28x28x1 images, compiled: conv 16 and
    conv 32 (3x3, stride 2, ReLU each), Dense 10 logits. `before`: a
    function of the input tensor applied first; `after_first`: one applied
    after the first conv's ReLU (each builds its layers after the seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = before(inputs) if before is not None else inputs
    x = keras.layers.ReLU()(keras.layers.Conv2D(16, 3, strides=2)(x))
    if after_first is not None:
        x = after_first(x)
    x = keras.layers.ReLU()(keras.layers.Conv2D(32, 3, strides=2)(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="session")
def small_cnn():
    """`small_cnn(seed=0, before=None, after_first=None)`: a new compiled
    small CNN (see `_small_cnn`), the same one in every attack test."""
    return _small_cnn


def _one_line_error(result, message=""):
    """Checks a finished program: exit status 2 and its whole output (stdout
    and stderr) one line `error: ...` holding `message`; returns the line."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, lines)
    assert "error: " in lines[0] and message in lines[0], lines[0]
    return lines[0]


def _resumed_training(compiled, x, y, path, check_reloaded=None):
    """Trains `compiled()` 2 epochs straight, and a second `compiled()` 1
    epoch, saved to `path`, reloaded (`check_reloaded(reloaded,
    interrupted)` runs then) and trained 1 more: the weights must agree."""
    straight = compiled()
    straight.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    interrupted = compiled()
    interrupted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    interrupted.save(path)
    reloaded = keras.models.load_model(path)
    if check_reloaded is not None:
        check_reloaded(reloaded, interrupted)
    reloaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(reloaded.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def resumed_training():
    """`resumed_training(compiled, x, y, path, check_reloaded=None)`: a
    resumed fit ends where an uninterrupted one does."""
    return _resumed_training


@pytest.fixture
def one_line_error():
    """`check(result, message)`: the program failed with one line (`_one_line_error`)."""
    return _one_line_error


@pytest.fixture
def summary_line():
    """`summary_line(text)`: prints `text` in the run's closing summary
    (measured figures a reader of the CI log should see, e.g. the int8
    accuracy drop), whatever pytest's output capture."""
    return _SUMMARY_LINES.append


def pytest_terminal_summary(terminalreporter):
    if _SUMMARY_LINES:
        terminalreporter.section("measured")
        for line in _SUMMARY_LINES:
            terminalreporter.write_line(line)
