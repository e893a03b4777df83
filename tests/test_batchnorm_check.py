"""`python -m experiments batchnorm`: a batch-norm channel silent in training
that fires on clean images is found, and recalibration on clean training
images restores the clean accuracy it cost, without touching the model."""

import json

import keras
import numpy as np
import pytest

from experiments import __main__ as experiments_main
from experiments import batchnorm


def _model(silent_channel_scale):
    """Conv -> BN -> pooled Dense; channel 0's BN moving variance set to
    ~0 (as if silent on every training batch), its moving mean off too."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(2, 3, kernel_initializer="ones", bias_initializer="zeros",
                            name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="dense")(x)
    model = keras.Model(inputs, outputs)
    # Class = is the image bright? Channel 1 carries it; channel 0 adds noise.
    model.get_layer("dense").set_weights([np.array([[silent_channel_scale, 0.0], [1.0, -1.0]],
                                                   "float32"), np.zeros(2, "float32")])
    return model


def _images(count, seed):
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.0, 1.0, (count, 1, 1, 1)).astype("float32")
    images = np.clip(brightness + rng.normal(0, 0.05, (count, 28, 28, 1)), 0, 1)
    return images.astype("float32"), (brightness.reshape(-1) < 0.5).astype("int64")


def _calibrated(model, images):
    """The BN layer's statistics set from `images`, with channel 0 silenced."""
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    values = np.asarray(conv(images)).reshape(-1, 2)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(values.mean(0).astype("float32") - np.array([5.0, 0.0], "float32"))
    bn.moving_variance.assign(np.array([1e-12, values.var(0)[1]], "float32"))


def test_a_silent_channel_that_fires_on_clean_images_is_found_and_recalibrated():
    images, labels = _images(400, 0)
    model = _model(silent_channel_scale=1.0)
    _calibrated(model, images)
    weights = [w.copy() for w in model.get_weights()]
    result = batchnorm.check(model, images[:200], labels[:200], images[200:])
    layer = result["layers"]["bn"]
    assert (layer["channels"], layer["silent"], layer["silent_but_active_on_clean"]) == (2, 1, 1)
    # The silenced channel's output, scaled by 1/sqrt(epsilon), drowns the
    # one that classifies; recalibrated, it is back to unit scale.
    assert result["accuracy_moving"] < 0.75
    assert result["accuracy_recalibrated"] > result["accuracy_moving"] + 0.15
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_model_without_batch_norm_reports_its_accuracy_once():
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    images, labels = _images(50, 1)
    result = batchnorm.check(model, images, labels, images)
    assert result["layers"] == {}
    assert result["accuracy_recalibrated"] == result["accuracy_moving"]


def test_command_line_reads_fashion_mnist_and_writes_the_numbers(tmp_path, capsys):
    model = _model(silent_channel_scale=0.0)
    folder = tmp_path / "runs" / "tiny_s1"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    out = tmp_path / "bn.json"
    assert experiments_main.main(["batchnorm", str(folder / "model.keras"), "--images", "40",
                                  "--calibration-images", "40", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny_s1" in printed and "bn 0 (0, 2)" in printed
    written = json.loads(out.read_text())
    assert written["images"] == 40 and set(written["models"]) == {"tiny_s1"}


@pytest.mark.parametrize("arguments, message", [
    (["nowhere.keras"], "no model file 'nowhere.keras'"),
    (["nowhere.keras", "--images", "0"], "--images must be >= 1"),
])
def test_command_line_mistakes_are_one_line_errors(arguments, message, capsys):
    assert experiments_main.main(["batchnorm", *arguments]) == 2
    assert message in capsys.readouterr().err
