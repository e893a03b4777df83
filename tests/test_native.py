"""keras_hebb's native selection op returns what sorting returns."""

import functools
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import _context, _native, _selection

RNG = np.random.default_rng(11)


def rows(kind, shape):
    if kind == "normal":
        return RNG.standard_normal(shape)
    if kind == "relu":  # half zeros, as after a ReLU
        return np.maximum(RNG.standard_normal(shape), 0.0)
    if kind == "ties":
        return RNG.integers(-3, 3, shape).astype(float)
    if kind == "signed_zeros":
        return RNG.choice([-0.0, 0.0, 1.0, -1.0], shape)
    if kind == "extremes":
        return RNG.choice([-np.inf, np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0], shape)
    if kind == "tiny":
        return RNG.standard_normal(shape) * 1e-30
    raise ValueError(kind)


def test_native_op_is_built_by_setup():
    assert _native.library() is not None, (
        "the native op is not built for this TensorFlow: run `make setup` "
        "(python -m keras_hebb._native)")


KINDS = ["normal", "relu", "ties", "signed_zeros", "extremes", "tiny"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 7, 64, 300, 1024])
def test_kth_largest_equals_sorting_for_every_k_region(kind, n):
    if _native.library() is None:
        pytest.skip("native op not built")
    x = rows(kind, (9, n)).astype("float32")
    # Both algorithms: few from the top, few from the bottom, the middle.
    for k in sorted({min(n, k) for k in (1, 2, 16, 17, max(1, n // 5), max(1, n - 16),
                                          max(1, n - 15), n)}):
        expected = -np.sort(-x, axis=-1)[:, k - 1]
        got = _native.kth_largest(tf.constant(x), k).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k}")
        if kind != "extremes":  # NthElement runs with subnormals flushed to 0
            nth = tf.raw_ops.NthElement(input=x, n=k - 1, reverse=True).numpy()
            np.testing.assert_array_equal(got, nth, err_msg=f"k={k}")


@pytest.mark.parametrize("kind", ["relu", "ties", "normal"])
def test_spatial_rows_read_in_place_equal_transposed_rows(kind):
    if _native.library() is None:
        pytest.skip("native op not built")
    x = rows(kind, (3, 9, 7, 5)).astype("float32")
    transposed = np.transpose(x.reshape(3, 63, 5), (0, 2, 1))
    for k in (1, 13, 40, 63):
        expected = -np.sort(-transposed, axis=-1)[..., k - 1]
        got = _native.kth_largest(tf.constant(x), k, spatial=True).numpy()
        assert got.shape == (3, 5)
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k}")


def test_op_shapes_in_graphs_and_errors():
    if _native.library() is None:
        pytest.skip("native op not built")
    spec = tf.TensorSpec((None, 4, 4, 8), tf.float32)
    graph_fn = tf.function(lambda v: _native.kth_largest(v, 3, spatial=True))
    assert graph_fn.get_concrete_function(spec).output_shapes.as_list() == [None, 8]
    rows_fn = tf.function(lambda v: _native.kth_largest(v, 3))
    assert rows_fn.get_concrete_function(spec).output_shapes.as_list() == [None, 4, 4]
    with pytest.raises(tf.errors.InvalidArgumentError, match="exceeds the 8 values"):
        _native.kth_largest(tf.zeros((2, 8)), 9)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NHWC"):
        _native.kth_largest(tf.zeros((2, 8)), 1, spatial=True)
    empty = _native.kth_largest(tf.zeros((0, 8)), 2)
    assert empty.shape == (0,)


def test_selection_without_the_native_op_gives_the_same_values():
    x = tf.constant(rows("relu", (2, 6, 6, 4)).astype("float32"))
    with_native = _selection.kth_largest_spatial(x, 8, fast=True)
    with _context.without_native():
        assert _selection.native_ops() is None
        without = _selection.kth_largest_spatial(x, 8, fast=True)
    portable = _selection.kth_largest_spatial(x, 8, fast=False)
    np.testing.assert_array_equal(with_native, without)
    np.testing.assert_array_equal(with_native, portable)


def test_gradient_does_not_flow_through_the_selection():
    if _native.library() is None:
        pytest.skip("native op not built")
    x = tf.constant(rows("normal", (3, 10)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        kth = _native.kth_largest(x, 4)
    assert tape.gradient(kth, x) is None


@pytest.mark.parametrize("channels, ratio, kind", [
    (64, 0.1, "normal"), (64, 0.1, "ties"), (256, 0.1, "relu"), (40, 0.5, "ties"),
    (10, 0.8, "normal")])
def test_hah_cost_op_value_and_gradient_equal_the_tensorflow_cost(channels, ratio, kind):
    # Both selection algorithms (K <= 16 and K = 25 of 256), ties at the
    # K-th value, K-th values at 0 (relu rows), K close to C.
    if _native.library() is None:
        pytest.skip("native op not built")
    from keras_hebb.hah_cost import hah_cost, winner_count

    z = tf.constant(rows(kind, (2, 5, 3, channels)).astype("float32"))
    demote = 0.5
    winners = winner_count(channels, ratio)
    lose = demote / (channels - winners)
    value, kth = _native.hah_cost(z, winners, lose)
    with tf.GradientTape() as tape:
        tape.watch(z)
        expected = hah_cost(z, ratio, demote)
    np.testing.assert_allclose(tf.reduce_mean(value), expected, rtol=1e-5, atol=1e-6)
    relu_sorted = -np.sort(-np.maximum(z.numpy(), 0), axis=-1)
    np.testing.assert_array_equal(kth, relu_sorted[..., winners - 1])
    scale = tf.constant(3.0 / 30)  # d_cost = 3 over 30 positions
    got = _native.hah_cost_gradient(z, kth, scale, winners, lose)
    np.testing.assert_allclose(got, 3.0 * tape.gradient(expected, z), rtol=1e-5, atol=1e-7)


def test_hah_cost_op_rejects_winners_not_below_channels():
    if _native.library() is None:
        pytest.skip("native op not built")
    with pytest.raises(tf.errors.InvalidArgumentError, match="below the 8 channels"):
        _native.hah_cost(tf.zeros((2, 8)), 8, 0.0)


def test_build_goes_to_the_user_cache_when_the_package_folder_is_read_only(
        monkeypatch, tmp_path):
    """A system-wide (read-only) install: the package folder takes no file,
    the build lands in $XDG_CACHE_HOME/keras_hebb and is found there."""
    commands = []

    def fake_compiler(command, **kwargs):  # writes what g++ would (-o target)
        commands.append(command)
        with open(command[command.index("-o") + 1], "w") as f:
            f.write("library")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(_native, "_DIR", "/proc")  # no file can be created there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_native.subprocess, "run", fake_compiler)
    monkeypatch.setattr(_native, "_load", functools.cache(lambda: None))
    target = _native.build(verbose=False)
    assert os.path.dirname(target) == str(tmp_path / "cache" / "keras_hebb")
    assert os.path.basename(target).startswith(f"_hah_ops_tf{tf.__version__}_")
    assert os.path.exists(target) and _native.library_path() == target
    assert commands[0][commands[0].index("-o") + 1] == target + ".partial"
    assert _native._SOURCE in commands[0]


def test_a_writable_package_folder_keeps_the_library():
    assert _native.library_path() == os.path.join(
        _native._DIR, f"_hah_ops_tf{tf.__version__}.so")
