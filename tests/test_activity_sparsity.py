"""A continuous route to sparse activations: Keras's own activity
regularizer on a `HaHBlock` (issue 36, "sparse without masking").

The block passes `activity_regularizer` to `keras.layers.Layer`, so the
penalty is Keras's: `l1 * sum|output| / batch size` in the model's losses,
serialized with the block, settable from a training config as
`block_options.activity_regularizer`. Trained, it must make the block's
output measurably sparser than the same seed without it.
"""

import numpy as np
import pytest

L1 = 1e-3


def _model(activity_regularizer, seed=3):
    import keras

    from keras_hebb.layers import HaHBlock

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        HaHBlock(8, alpha=0.0, threshold=None, activity_regularizer=activity_regularizer,
                 name="b1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="logits"),
    ])


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.random((n, 12, 12, 1)).astype("float32")
    # A label the network can learn: which third of the image is brightest.
    y = np.argmax([x[:, :4].mean((1, 2, 3)), x[:, 4:8].mean((1, 2, 3)),
                   x[:, 8:].mean((1, 2, 3))], axis=0)
    return x, y


def test_the_penalty_is_kerass_l1_of_the_block_output_per_image():
    import keras
    from keras import ops

    model = _model(keras.regularizers.L1(L1))
    x, _ = _data(16)
    model(x, training=True)
    block = model.get_layer("b1")
    output = ops.convert_to_numpy(block(x))
    (penalty,) = [float(ops.convert_to_numpy(loss)) for loss in block.losses]
    np.testing.assert_allclose(penalty, L1 * np.abs(output).sum() / len(x), rtol=1e-5)


def test_the_regularizer_survives_save_and_load(tmp_path):
    import keras

    model = _model(keras.regularizers.L1(L1))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    regularizer = loaded.get_layer("b1").activity_regularizer
    assert isinstance(regularizer, keras.regularizers.L1)
    assert regularizer.get_config()["l1"] == pytest.approx(L1)


def test_training_with_the_penalty_makes_the_block_sparser():
    import keras

    from keras_hebb.sparsity import activation_statistics

    x, y = _data()
    fractions = {}
    for l1 in (0.0, 0.05):
        model = _model(keras.regularizers.L1(l1) if l1 else None)
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=8, batch_size=32, verbose=0)
        (stats,) = activation_statistics(model, x, layers=[model.get_layer("b1")])
        fractions[l1] = stats["nonzero_fraction"]
    # Same seed, same data: the penalty alone at least halves the non-zeros.
    assert fractions[0.05] < 0.5 * fractions[0.0], fractions


def test_a_config_sets_it_and_says_what_is_wrong_in_one_line():
    import yaml

    from training.config import ConfigError, apply_overrides, validate

    raw = {"dataset": "fashion_mnist", "architecture": "hah_vgg_small"}
    config = validate(apply_overrides(raw, [
        "block_options.activity_regularizer={class_name: L1, config: {l1: 0.0001}}"]))
    stored = config["block_options"]["activity_regularizer"]
    assert stored["class_name"] == "L1"
    assert stored["config"]["l1"] == pytest.approx(1e-4)
    # The stored config is YAML and validates again to the same options.
    again = validate(yaml.safe_load(yaml.safe_dump(config)))
    assert again["block_options"] == config["block_options"]
    with pytest.raises(ConfigError, match=r"^Invalid config value "
                       r"block_options.activity_regularizer='l7': expected a Keras "
                       r"regularizer[^\n]*\.$"):
        validate(apply_overrides(raw, ["block_options.activity_regularizer=l7"]))


def test_block_options_may_give_each_hah_block_its_own_regularizer(tmp_path):
    import keras

    from keras_hebb import architectures

    model = architectures.robust_hah_vgg_small(block_options=[
        {"activity_regularizer": keras.regularizers.L1(1e-3)},
        {"activity_regularizer": keras.regularizers.L1(1e-4)}])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    strengths = [loaded.get_layer(f"block{i}_hah").activity_regularizer.get_config()["l1"]
                 for i in (1, 2)]
    assert strengths == [pytest.approx(1e-3), pytest.approx(1e-4)]
    # The recipe's own option stays on every block.
    assert [loaded.get_layer(f"block{i}_hah").threshold_layer for i in (1, 2)] == [None, None]
    with pytest.raises(ValueError, match=r"expected a dict, or a list of 2 dicts"):
        architectures.robust_hah_vgg_small(block_options=[{}])


def test_a_config_gives_per_block_options_and_a_dotted_override_reaches_every_block():
    from training.config import ConfigError, apply_overrides, validate

    raw = {"dataset": "fashion_mnist", "architecture": "hah_vgg_small"}
    config = validate(apply_overrides(raw, [
        "block_options=[{activity_regularizer: {class_name: L1, config: {l1: 1.0e-3}}}, {}]",
        "block_options.threshold=null"]))
    first, second = config["block_options"]
    assert first["activity_regularizer"]["config"]["l1"] == pytest.approx(1e-3)
    assert "activity_regularizer" not in second
    assert first["threshold"] is None and second["threshold"] is None
    with pytest.raises(ConfigError, match=r"^Unknown config key 'block_options\[1\]\.thresh'"):
        validate(apply_overrides(raw, ["block_options=[{}, {thresh: 1}]"]))
