"""The fast paths give the results of the portable ones; the benchmarks run."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_hebb
from keras_hebb import _native, _selection
from keras_hebb.layers import FractionalThreshold

RNG = np.random.default_rng(7)


def reference_hah_cost(z, ratio, demote):
    """The cost written with top_k, as before the selection rewrite."""
    r = tf.nn.relu(tf.cast(z, tf.float32))
    channels = r.shape[-1]
    k = max(1, math.ceil(round(ratio * channels, 6)))
    top = tf.reduce_sum(tf.math.top_k(r, k).values, axis=-1)
    per_position = top / k
    if k < channels:
        per_position -= demote * (tf.reduce_sum(r, axis=-1) - top) / (channels - k)
    return tf.reduce_mean(per_position)


def test_kth_largest_paths_agree_with_ties_and_numpy():
    x = RNG.integers(0, 5, size=(6, 40)).astype("float32")  # many ties
    expected = -np.sort(-x, axis=-1)[:, 12]
    fast = _selection.kth_largest(tf.constant(x), 13, fast=True)
    portable = _selection.kth_largest(tf.constant(x), 13, fast=False)
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(portable, expected)


def test_fast_selection_is_not_used_inside_xla():
    x = tf.constant(RNG.normal(size=(4, 30)).astype("float32"))
    compiled = tf.function(lambda v: _selection.kth_largest(v, 5), jit_compile=True)
    np.testing.assert_array_equal(compiled(x), -np.sort(-x.numpy(), axis=-1)[:, 4])


@pytest.mark.parametrize("values", ["ties", "distinct"])
def test_fractional_threshold_training_path_equals_inference_path(values):
    shape = (3, 10, 10, 4)
    if values == "ties":
        x = RNG.integers(0, 4, size=shape).astype("float32")
    else:
        x = RNG.permutation(np.prod(shape)).reshape(shape).astype("float32")
    layer = FractionalThreshold(0.2)
    train = tf.function(lambda v: layer(v, training=True))(x)
    infer = tf.function(lambda v: layer(v, training=False))(x)
    np.testing.assert_array_equal(train, infer)
    graph = tf.function(lambda v: layer(v, training=True)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph
    selection = "KerasHebbKthLargest" if _native.library() else "NthElement"
    assert selection in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("ratio,demote", [(0.1, 1.0), (0.25, 0.1), (0.5, 1.0)])
def test_hah_cost_value_and_gradient_equal_the_top_k_formula(ratio, demote):
    z = tf.constant(RNG.normal(size=(2, 5, 6, 30)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        value = keras_hebb.hah_cost(z, ratio, demote)
        reference = reference_hah_cost(z, ratio, demote)
    np.testing.assert_allclose(value, reference, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(value, z), tape.gradient(reference, z),
                               rtol=1e-6, atol=1e-9)


def test_hah_cost_with_tied_channels_has_the_top_k_value_and_shares_the_gradient():
    # Two channels tied at the K-th value (K = 3 of 10): one winner slot left.
    z = tf.constant([[5.0, 4.0, 3.0, 3.0, 1.0, 1.0, 0.5, -1.0, -2.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = keras_hebb.hah_cost(z, ratio=0.3, demote=1.0)
    np.testing.assert_allclose(value, float(reference_hah_cost(z, 0.3, 1.0)), rtol=1e-6)
    gradient = tape.gradient(value, z).numpy()[0]
    win, lose = 1 / 3, -1 / 7
    np.testing.assert_allclose(gradient[:4], [win, win, (win + lose) / 2, (win + lose) / 2],
                               rtol=1e-6)
    np.testing.assert_allclose(gradient[4:7], lose, rtol=1e-6)
    np.testing.assert_array_equal(gradient[7:], 0.0)  # ReLU passes nothing


def test_train_step_benchmark_runs_and_prints_the_table(capsys):
    from benchmarks import train_step

    assert train_step.main(["--pairs", "small", "--batch-sizes", "4", "--steps", "1",
                            "--warmup", "0", "--onednn", "current", "--no-memory",
                            "--matmul-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "| hah_vgg_small | 4 |" in out and "| vgg_small_bn | 4 |" in out
    assert "matmul 256^2 float32" in out


def test_tflite_ops_benchmark_shows_the_int8_graph_multiplies_by_the_reciprocal(capsys):
    from benchmarks import tflite_ops

    assert tflite_ops.main(["--height", "4", "--channels", "4", "--repeats", "1"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |")
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    # The full-size op is the last one: a DIV before, a MUL (XNNPACK) now;
    # the small reciprocal by RSQRT, no int8 DIV (docs/EXPORT.md).
    assert rows["divisive normalization, broadcast DIV (before)"].endswith("DIV")
    shipped = rows["divisive normalization, reciprocal MUL (shipped)"]
    assert shipped.endswith("RSQRT (MUL) x3") and "DIV" not in shipped
    assert "TOPK_V2" in rows["DN + threshold, top_k (SavedModel; --topk-thresholds files)"]
    counting = rows["DN + threshold by integer counting (TFLite export)"]
    assert "TOPK_V2" not in counting and "BITCAST" in counting


def test_int8_accuracy_benchmark_runs_and_prints_the_drop_and_its_error(capsys):
    from benchmarks import int8_accuracy

    assert int8_accuracy.main(["--train-images", "128", "--epochs", "1", "--test-images", "100",
                               "--calibration-images", "32", "--legacy-normalization"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| int8 (legacy normalization) |")]
    assert len(rows) == 1 and len(rows[0].split("|")) == 8


def test_benchmarks_reject_bad_arguments_with_status_2(capsys):
    from benchmarks import compare_hahtorch, profile_hah, tflite_ops, train_step

    assert tflite_ops.main(["--height", "2"]) == 2
    assert train_step.main(["--steps", "0"]) == 2
    assert profile_hah.main(["--batch", "0"]) == 2
    assert compare_hahtorch.main(["--torch-python", "/nonexistent/python"]) == 2
    err = capsys.readouterr().err
    assert "--steps >= 1" in err and "no PyTorch virtualenv at /nonexistent/python" in err


def test_selection_benchmark_runs_and_reports_ratios_to_the_native_op(capsys):
    from benchmarks import selection

    assert selection.main(["--batch", "1", "--steps", "1", "--warmup", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| threshold") or line.startswith("| cost")]
    assert len(rows) == 9 and all(line.count("x |") >= 1 for line in rows)
    assert selection.main(["--batch", "0"]) == 2


def test_accelerator_benchmark_runs_and_prints_its_figures():
    """`python -m benchmarks.accelerator` on the small pair, one step each,
    in a subprocess as a user runs it (CPU: no XLA, no mixed precision;
    tests/test_accelerator_path.py trains under a GPU's settings); and its
    exit statuses for bad arguments and a loss that is not finite."""
    import re
    import subprocess
    import sys

    from benchmarks import accelerator

    command = [sys.executable, "-m", "benchmarks.accelerator", "--preset", "small",
               "--batch", "4", "--steps", "1", "--warmup", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Device: CPU (" in out and "XLA (jit_compile): off" in out
    assert "Mixed precision: off (float32)" in out
    assert "the 20 real CIFAR-10 images of cifar10_sample" in out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in out.splitlines() if line.startswith("| ")}
    for name in ("hah_vgg_small", "vgg_small_bn"):
        img_s = float(rows[name][4])
        assert rows[name][1] == "4" and img_s > 0 and math.isfinite(img_s)
    assert float(rows["hah_vgg_small"][8].strip(" |")) > 0  # the HaH cost was computed
    ratio = re.search(r"HaH/standard step time: ([0-9.]+)x", out)
    assert ratio and float(ratio.group(1)) > 0
    assert re.search(r"process peak RSS \d+ MiB", out)

    assert accelerator.main(["--batch", "0"]) == 2

    class NotFinite:
        name = "broken"

        def train_on_batch(self, x, y, return_dict):
            return {"loss": float("nan")}

    with pytest.raises(accelerator.StepFailed, match="not finite"):
        accelerator._step(NotFinite(), None, None)
