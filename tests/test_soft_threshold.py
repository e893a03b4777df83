"""The continuous threshold: `FractionalThreshold(mode="soft")`, `max(x - t, 0)`.

It keeps the units the hard threshold keeps, shrunk by the threshold `t`,
so its output is continuous in the input; its gradient is the function's
own (through `t` too); it serializes, and exports to SavedModel and TFLite
(float32 and int8) like the hard one.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import tflite
from keras_hebb import _context, data
from keras_hebb.architectures import build_vgg
from keras_hebb.layers import FractionalThreshold, HaHBlock


def _closed_form(x, ratio):
    """`max(x - t, 0)` per image and channel, `t` the k-th smallest spatial
    value, `k = floor((1 - ratio) * H * W)`."""
    n, h, w, c = x.shape
    rows = x.reshape(n, h * w, c)
    t = np.sort(rows, axis=1)[:, int(np.floor((1 - ratio) * h * w)) - 1, :]
    return np.maximum(rows - t[:, None, :], 0.0).reshape(x.shape), t


@pytest.mark.parametrize("training", [False, True])
def test_soft_threshold_has_correct_output_and_keeps_the_hard_thresholds_units(training):
    x = np.random.default_rng(0).random((2, 10, 10, 3)).astype(np.float32)
    soft = FractionalThreshold(0.2, mode="soft")(x, training=training).numpy()
    hard = FractionalThreshold(0.2)(x, training=training).numpy()
    expected, _ = _closed_form(x, 0.2)
    np.testing.assert_allclose(soft, expected, atol=1e-6)
    np.testing.assert_array_equal(soft > 0, hard > 0)
    assert (soft > 0).sum() == 2 * 3 * 20


def test_soft_threshold_is_continuous_where_the_hard_one_jumps():
    x = np.random.default_rng(1).random((1, 6, 6, 1)).astype(np.float32)
    flat = np.sort(x.reshape(-1))
    k = int(np.floor(0.75 * 36))
    t, smallest_kept = flat[k - 1], flat[k]
    # Move the value at the threshold's rank from just below the smallest
    # kept value to just above it: the two swap roles. The hard output
    # jumps by about that value at two places, the soft one by about the step.
    at_t = np.argwhere(x.reshape(-1) == t)[0, 0]
    below, above = x.copy(), x.copy()
    below.reshape(-1)[at_t] = smallest_kept - 1e-4
    above.reshape(-1)[at_t] = smallest_kept + 1e-4
    for mode in ("soft", "hard"):
        layer = FractionalThreshold(0.25, mode=mode)
        change = np.abs(layer(above).numpy() - layer(below).numpy()).max()
        if mode == "soft":
            assert change < 1e-3
        else:
            assert change > 0.5 * smallest_kept


def test_soft_threshold_gradient_is_the_functions_own_through_the_threshold():
    x = np.random.default_rng(2).random((1, 5, 5, 2)).astype(np.float32)
    layer = FractionalThreshold(0.3, mode="soft")
    weights = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(variable) * weights)
    gradient = tape.gradient(loss, variable).numpy()
    # Central differences in float64 on the closed form (distinct values,
    # so the same units stay kept for a small step).
    numeric = np.zeros_like(gradient)
    step = 1e-4
    for index in np.ndindex(x.shape):
        plus, minus = x.astype(np.float64), x.astype(np.float64)
        plus[index] += step
        minus[index] -= step
        numeric[index] = (np.sum(_closed_form(plus, 0.3)[0] * weights)
                          - np.sum(_closed_form(minus, 0.3)[0] * weights)) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, atol=2e-3)
    # The value at the threshold's rank gets minus the kept units' weights:
    # a gradient that a stop_gradient on t would hide.
    at_threshold = x == _closed_form(x, 0.3)[1][:, None, None, :]
    assert at_threshold.sum() == 2 and np.all(gradient[at_threshold] != 0)


def test_soft_threshold_round_trips_in_a_saved_model(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    x = HaHBlock(4, threshold_mode="soft")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    assert model.layers[1].get_config()["threshold_mode"] == "soft"
    assert model.layers[1].threshold_layer.get_config()["mode"] == "soft"
    path = tmp_path / "soft.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.default_rng(4).random((3, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    assert loaded.layers[1].threshold_mode == "soft"


def test_invalid_mode_is_one_line():
    with pytest.raises(ValueError, match="Received: mode='smooth'"):
        FractionalThreshold(0.2, mode="smooth")
    with pytest.raises(ValueError, match="threshold_mode"):
        HaHBlock(4, threshold_mode="smooth")


def test_soft_threshold_counts_by_integers_for_tflite_and_exports_float_and_int8():
    x = np.round(np.random.default_rng(5).random((2, 8, 8, 3)) * 4).astype(np.float32) / 4
    layer = FractionalThreshold(0.2, nonnegative_inputs=True, mode="soft")
    reference = layer(x, training=False).numpy()
    with _context.integer_threshold():
        integer = tf.function(lambda v: layer(v, training=False))(x).numpy()
    np.testing.assert_array_equal(integer, reference)  # ties included

    keras.utils.set_random_seed(3)
    model = build_vgg((8, "M", 16), hah_blocks=2, input_shape=(28, 28, 1),
                      block_options={"threshold_mode": "soft"}, name="tiny_soft")
    images, _ = data.load_arrays("fashion_mnist", "train", 264)
    pixels = np.round(images[64:] * 255).astype(np.uint8)
    keras_logits = model.predict(pixels.astype(np.float32) / 255, verbose=0)
    float32 = tflite.TFLiteRunner(tflite.convert(model, "float32")).logits(pixels)
    np.testing.assert_allclose(float32, keras_logits, atol=1e-3)
    int8 = tflite.convert(model, "int8", representative_images=images[:64])
    assert "TOPK_V2" not in {op["op"] for op in tflite.op_table(int8)}
    assert tflite.undocumented_float_islands(int8) == []
    # An untrained model's classes are near ties: compare the logits. (0.96
    # here, as for the same model with the hard threshold; margin for other
    # CPUs' kernels.)
    int8_logits = tflite.TFLiteRunner(int8).logits(pixels)
    assert np.corrcoef(int8_logits.ravel(), keras_logits.ravel())[0, 1] > 0.9
