"""HebbianModel: layer-local HaH gradients, train_step, strategies, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hebb
from keras_hebb import HebbianModel, collect_hah_costs, hah_cost
from keras_hebb.architectures import build_vgg
from keras_hebb.layers import HaHBlock

RNG = np.random.default_rng(7)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_hah_model(alphas=(0.05, 0.03), seed=1, hah_blocks=2):
    """Two HaH blocks, then a standard block (conv, ReLU, batch norm)."""
    keras.utils.set_random_seed(seed)
    if hah_blocks == 3:
        alphas = list(alphas) + [0.02]
    return build_vgg((6, "M", 8, "M", 8), hah_blocks=hah_blocks, input_shape=(12, 12, 1),
                     num_classes=3, hah_alphas=alphas if not isinstance(alphas, tuple) else list(alphas),
                     name="tiny")


def tiny_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 12, 12, 1)).astype("float32"), rng.integers(0, 3, n)


def test_hah_cost_of_a_layer_reaches_only_its_own_kernel():
    keras.utils.set_random_seed(3)
    blocks = [HaHBlock(6, name="b1", alpha=0.0), HaHBlock(8, name="b2", alpha=0.0),
              HaHBlock(10, name="b3", alpha=0.0)]
    x = tf.constant(RNG.random((2, 9, 9, 2)).astype("float32"))
    for block, shape in zip(blocks, [(2, 9, 9, 2), (2, 9, 9, 6), (2, 9, 9, 8)]):
        block.build(shape)
    kernels = [b.conv.kernel for b in blocks]
    with tf.GradientTape(persistent=True) as tape:
        with collect_hah_costs() as scope:
            inputs = [x]
            for block in blocks:
                inputs.append(block(inputs[-1], training=True))
        costs = [scope.costs[b.name] for b in blocks]
    for l, block in enumerate(blocks):
        grads = tape.gradient(costs[l], kernels)
        for earlier in range(l):
            assert grads[earlier] is None or not np.any(grads[earlier].numpy())
        for later in range(l + 1, len(blocks)):
            assert grads[later] is None
        # Reference: the same cost with the layer input held constant.
        with tf.GradientTape() as ref_tape:
            z = keras.ops.conv(tf.stop_gradient(inputs[l]),
                               block.conv.normalized_kernel(), padding="same")
            reference = hah_cost(z, block.cost_ratio, block.cost_demote)
        expected = ref_tape.gradient(reference, block.conv.kernel)
        assert float(tf.reduce_max(tf.abs(expected))) > 0
        np.testing.assert_allclose(grads[l], expected, rtol=1e-5, atol=1e-7)
        assert float(costs[l]) == pytest.approx(float(reference), rel=1e-6)


def test_cost_scope_leaves_the_forward_pass_and_its_gradients_unchanged():
    model = tiny_hah_model()
    x, y = tiny_data(8)

    def ce_gradients(with_scope):
        with tf.GradientTape() as tape:
            if with_scope:
                with collect_hah_costs():
                    logits = model(x, training=True)
            else:
                logits = model(x, training=True)
            loss = LOSS(y, logits)
        return logits, tape.gradient(loss, model.trainable_weights)

    logits_a, grads_a = ce_gradients(True)
    logits_b, grads_b = ce_gradients(False)
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_train_step_equals_cross_entropy_plus_local_hah_gradients():
    """One SGD step (lr=1) moves each weight by minus the expected gradient."""
    model = tiny_hah_model(alphas=(0.5, 0.2))
    x, y = tiny_data(16)
    blocks = model.hah_layers
    weights = model.trainable_weights
    before = [w.numpy().copy() for w in weights]

    # Reference: persistent tape, one gradient call per HaH cost and kernel.
    with tf.GradientTape(persistent=True) as tape:
        with collect_hah_costs() as scope:
            logits = model(x, training=True)
        ce = LOSS(y, logits)
    expected = [g.numpy() for g in tape.gradient(ce, weights)]
    for alpha, block in zip(model.hah_alphas, blocks):
        g = tape.gradient(scope.costs[block.name], block.conv.kernel).numpy()
        index = next(i for i, w in enumerate(weights) if w is block.conv.kernel)
        expected[index] -= alpha * g

    model.compile(keras.optimizers.SGD(1.0), LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for w, b, g in zip(model.trainable_weights, before, expected):
        np.testing.assert_allclose(b - w.numpy(), g, rtol=1e-4, atol=1e-6)


def test_fit_and_evaluate_log_total_and_per_layer_hah_costs():
    model = tiny_hah_model()
    x, y = tiny_data(32)
    model.compile("adam", LOSS, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    keys = {"loss", "accuracy", "hah_cost", "hah_block1_hah", "hah_block2_hah"}
    assert keys <= set(history.history)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert keys <= set(result)
    # hah_cost = sum(alpha * HaH); evaluation's loss is the cross-entropy
    # alone (the HaH terms are training losses).
    ce = float(LOSS(y, model.predict(x, verbose=0)))
    total = sum(a * result[f"hah_{b.name}"] for a, b in zip(model.hah_alphas, model.hah_layers))
    assert total > 0.01
    assert result["hah_cost"] == pytest.approx(total, rel=1e-4)
    assert result["loss"] == pytest.approx(ce, rel=1e-4, abs=1e-5)


def test_training_loss_is_cross_entropy_minus_the_hah_term():
    # Three HaH blocks and no batch norm: the training forward pass is the
    # inference one, so one full batch at learning rate 0 gives training's
    # loss from evaluation's numbers.
    model = tiny_hah_model(hah_blocks=3)
    x, y = tiny_data(32)
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    evaluated = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert evaluated["hah_cost"] > 0.01
    trained = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
    assert trained["hah_cost"][0] == pytest.approx(evaluated["hah_cost"], rel=1e-4)
    assert trained["loss"][0] == pytest.approx(
        evaluated["loss"] - evaluated["hah_cost"], rel=1e-4, abs=1e-5)


def test_sample_weights_weight_the_cross_entropy_as_keras_defines_it():
    # Three HaH blocks and no batch norm: the training forward pass is the
    # inference one, so the first training batch's loss can be computed by hand.
    model = tiny_hah_model(hah_blocks=3)
    x, y = tiny_data(16)
    weights = np.random.default_rng(3).uniform(0.0, 2.0, 16).astype("float32")
    weights[:5] = 0.0
    model.compile("adam", LOSS)
    per_image = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    cross_entropy = keras.ops.convert_to_numpy(per_image(y, model.predict(x, verbose=0)))
    hah = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["hah_cost"]
    # Keras's "sum_over_batch_size": sum of w * loss over the batch, divided
    # by the batch size (not by the sum of the weights); the HaH term is not
    # weighted, and enters training's loss only.
    expected = float(np.sum(weights * cross_entropy) / 16)
    unweighted = float(np.mean(cross_entropy))
    assert abs(expected - unweighted) > 0.05  # the weights matter here
    weighted = model.evaluate(x, y, sample_weight=weights, batch_size=16,
                              verbose=0, return_dict=True)
    assert weighted["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # The training step's loss (computed before its update) adds the HaH term.
    history = model.fit(x, y, sample_weight=weights, batch_size=16, epochs=1,
                        shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected - hah, rel=1e-4, abs=1e-5)


@pytest.mark.float16_conv
def test_mixed_float16_training_is_finite_and_learns():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_hah_model()
        assert model.hah_layers[0].compute_dtype == "float16"
        x, y = tiny_data(64)
        model.compile("adam", LOSS)
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(history.history["hah_block1_hah"]))


def test_mirrored_strategy_on_two_devices_matches_one_device():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "tests/conftest.py splits the CPU in two"
    x, y = tiny_data(64)

    def train(strategy):
        with strategy.scope():
            # HaH blocks only: batch norm's per-replica statistics would
            # differ from one device's by design (not by a bug). Fails if
            # Keras stops dividing layer losses (the HaH terms) by the
            # number of replicas as it does the compiled loss.
            model = tiny_hah_model(seed=5, hah_blocks=3)
            model.compile(keras.optimizers.Adam(1e-2), LOSS)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        model.fit(data, epochs=2, verbose=0)
        return model.get_weights()

    mirrored = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    assert mirrored.num_replicas_in_sync == 2
    single = train(tf.distribute.get_strategy())
    double = train(mirrored)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(single, double))
    assert difference < 1e-4


def test_keras_file_round_trip_restores_predictions_and_training(tmp_path, resumed_training):
    x, y = tiny_data(64)

    def compiled():
        model = tiny_hah_model(seed=11)
        model.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
        return model

    def check(reloaded, interrupted):
        assert isinstance(reloaded, HebbianModel)
        assert reloaded.hah_alphas == interrupted.hah_alphas
        np.testing.assert_array_equal(reloaded.predict(x, verbose=0),
                                      interrupted.predict(x, verbose=0))
        assert int(reloaded.optimizer.iterations) == 4

    resumed_training(compiled, x, y, str(tmp_path / "model.keras"), check)


@pytest.mark.parametrize("alphas,message", [
    ([0.1], "expected 2 values"),
    ({"block9_hah": 0.1}, "no HaH layer named"),
    (-0.1, ">= 0"),
    ("big", "expected None, a number"),
])
def test_bad_alphas_raise_value_error(alphas, message):
    with pytest.raises(ValueError, match=message):
        tiny_hah_model(alphas=alphas)


def test_default_alphas_follow_the_paper_schedule():
    model = build_vgg((4, 4, 4, 4, 4, 4, 4), hah_blocks=7, input_shape=(8, 8, 1))
    assert model.hah_alphas == list(keras_hebb.PAPER_ALPHAS) + [keras_hebb.PAPER_ALPHAS[-1]]
