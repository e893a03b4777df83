"""The TFLite export's integer threshold keeps exactly what `top_k` keeps.

Inside `keras_hebb._context.integer_threshold()` a HaH block's
`FractionalThreshold` selects by counting on the int32 bit patterns of its
input instead of calling `top_k`; the TFLite export traces it so.
It must keep the same values as the `top_k` rule for every input, ties
included, and the converted file must equal the `TOPK_V2` one in what it
computes.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from export import tflite
from keras_hebb import _context, data
from keras_hebb.architectures import build_vgg
from keras_hebb.layers import FractionalThreshold


def _both_paths(x, ratio, nonnegative=True):
    layer = FractionalThreshold(ratio, nonnegative_inputs=nonnegative)
    reference = tf.function(lambda v: layer(v, training=False))(x).numpy()
    with _context.integer_threshold():
        function = tf.function(lambda v: layer(v, training=False))
        integer = function(x).numpy()
        graph_ops = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
    return reference, integer, graph_ops


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.03])
@pytest.mark.parametrize("values", ["uniform", "ties", "tiny and huge", "near ties", "full range"])
def test_integer_threshold_matches_top_k(ratio, values):
    rng = np.random.default_rng(0)
    x = rng.random((3, 12, 12, 5)).astype(np.float32)
    if values == "ties":
        x = np.round(x * 4) / 4
        x[0, ..., 0] = 0.5  # a channel that is one value
        x[2, ..., 2] = np.where(rng.random((12, 12)) < 0.9, 0.0, x[2, ..., 2])
        x[1, ..., 3] = -0.0  # read as a negative int32: below every v
    elif values == "tiny and huge":
        x = x * np.float32(10.0) ** rng.integers(-38, 38, size=x.shape).astype(np.float32)
        x[1, :3] = 0.0
    elif values == "near ties":  # neighbouring floats
        x = np.nextafter(np.float32(1.0), np.float32(2.0) * (x > 0.5)).astype(np.float32)
        x[0, ::2] = np.float32(1.0) + np.float32(2.0 ** -23) * rng.integers(0, 3, size=(6, 12, 5))
    elif values == "full range":  # neighbouring floats next to 0 and 3e38: every bit counts
        x = np.float32(1.0) + np.float32(2.0 ** -23) * rng.integers(0, 4, size=x.shape)
        x[:, 0, 0], x[:, 0, 1] = 0.0, 3e38
    reference, integer, graph_ops = _both_paths(x, ratio)
    assert "TopKV2" not in graph_ops and "Bitcast" in graph_ops
    np.testing.assert_array_equal(integer, reference)


def test_signed_inputs_keep_top_k():
    """Bit patterns order only nonnegative floats: a threshold not known to
    follow a ReLU keeps `top_k`, inside the scope too."""
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    _, integer, graph_ops = _both_paths(x, 0.2, nonnegative=False)
    assert "TopKV2" in graph_ops and "Bitcast" not in graph_ops
    # Against the closed form (the bit-pattern order would get the negative
    # values wrong): keep x > t, t the k-th smallest, k = floor(0.8 * 64).
    rows = x.reshape(2, 64, 3)
    t = np.sort(rows, axis=1)[:, int(0.8 * 64) - 1, :]
    expected = np.where(rows > t[:, None, :], rows, 0.0).reshape(x.shape)
    np.testing.assert_array_equal(integer, expected)
    assert (x < 0).any() and (integer > 0).sum() == 2 * 3 * (64 - 51)


def _tiny_hah_model():
    keras.utils.set_random_seed(3)
    return build_vgg((8, "M", 16), hah_blocks=2, input_shape=(28, 28, 1), name="tiny_hah")


@pytest.fixture(scope="module")
def int8_files():
    model = _tiny_hah_model()
    images, _ = data.load_arrays("fashion_mnist", "train", 264)
    files = {flag: tflite.convert(model, "int8", representative_images=images[:64],
                                  integer_threshold=flag) for flag in (True, False)}
    return model, images[64:], files


def test_int8_file_has_no_topk_and_only_documented_float_ops(int8_files):
    _, _, files = int8_files
    ops = {op["op"] for op in tflite.op_table(files[True])}
    assert "TOPK_V2" not in ops and "BITCAST" in ops
    assert tflite.undocumented_float_islands(files[True]) == []
    assert [tflite.op_signature(op) for op in tflite.float_ops(files[True])["between"]]
    assert "TOPK_V2" in {op["op"] for op in tflite.op_table(files[False])}


def test_int8_file_gives_the_logits_of_the_top_k_file(int8_files):
    _, images, files = int8_files
    pixels = np.round(images * 255).astype(np.uint8)
    logits = [tflite.TFLiteRunner(files[flag]).logits(pixels) for flag in (True, False)]
    np.testing.assert_array_equal(logits[0], logits[1])


def test_int8_file_thresholds_keep_what_top_k_keeps_on_its_own_tensors(int8_files):
    model, images, files = int8_files
    content = files[True]
    interpreter = Interpreter(
        model_content=content, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    index = interpreter.get_input_details()[0]["index"]
    batch = np.round(images[:32] * 255).astype(np.uint8)
    interpreter.resize_tensor_input(index, batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, batch)
    interpreter.invoke()

    table = tflite.op_table(content)
    producer = {t: op for op in table for t in op["outputs"]}
    thresholds = [op for op in table if op["op"] == "SELECT_V2"
                  and op["output_dtypes"] == ["int8"]
                  and tflite.op_signature(producer[op["inputs"][0]]).startswith(
                      "GREATER int32")]
    ranks = [layer.threshold_layer.threshold_rank
             for layer in model.layers if hasattr(layer, "threshold_layer")]
    assert len(thresholds) == len(ranks) == 2
    for op, rank in zip(thresholds, ranks):
        _, values, zero = (interpreter.get_tensor(t) for t in op["inputs"])
        kept = interpreter.get_tensor(op["outputs"][0])
        n, h, w, c = values.shape
        flat = values.reshape(n, h * w, c).astype(np.int32)
        kth = -np.sort(-flat, axis=1)[:, rank - 1, :]
        expected = np.where(flat > kth[:, None, :], flat, int(np.ravel(zero)[0]))
        np.testing.assert_array_equal(kept.reshape(n, h * w, c), expected)
        assert 0 < np.mean(expected != int(np.ravel(zero)[0])) <= 0.2


def test_float32_file_counts_too_and_gives_the_top_k_file_logits(int8_files):
    model, images, _ = int8_files
    files = {flag: tflite.convert(model, "float32", integer_threshold=flag)
             for flag in (True, False)}
    assert "TOPK_V2" not in {op["op"] for op in tflite.op_table(files[True])}
    assert "TOPK_V2" in {op["op"] for op in tflite.op_table(files[False])}
    pixels = np.round(images * 255).astype(np.uint8)
    logits = [tflite.TFLiteRunner(files[flag]).logits(pixels) for flag in (True, False)]
    np.testing.assert_array_equal(logits[0], logits[1])
