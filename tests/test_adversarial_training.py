"""Adversarial training in HebbianModel: crafted examples, robustness, state,
strategies, saving, options."""

import importlib.util
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_hebb import HebbianModel
from keras_hebb.architectures import build_vgg
from keras_hebb.hebbian_model import adversarial_options

if keras.backend.backend() == "tensorflow":  # not when run as the JAX program below
    import tensorflow as tf

    from keras_hebb import data
    from keras_hebb._trainers import tensorflow_trainer
    from keras_hebb.robustness import attacks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def linear_model(adversarial, seed=0):
    """Dense logits on the flattened 4x4x1 image, known weights."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(3)
    model = HebbianModel(inputs, dense(keras.layers.Flatten()(inputs)),
                         adversarial=adversarial)
    weights = rng.normal(size=(16, 3)).astype("float32")
    bias = rng.normal(size=3).astype("float32")
    dense.set_weights([weights, bias])
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    return model, weights, bias


def cross_entropy_input_gradient(x, y, weights, bias):
    """d CE(softmax(W^T x + b), y) / d x per example: W (p - onehot(y))."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    logits = flat @ weights + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return (p @ weights.T).reshape(x.shape)


@pytest.mark.parametrize("attack", ["fgsm_rs", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_one_step_without_random_start_equals_the_closed_form(attack, norm, eps):
    rng = np.random.default_rng(3)
    x = rng.random((8, 4, 4, 1)).astype("float32")
    x[0] = 0.98  # near the box edge: the clip must act
    y = rng.integers(0, 3, 8)
    model, weights, bias = linear_model(
        {"attack": attack, "norm": norm, "eps": eps, "steps": 1, "step_size": eps,
         "random_start": False})
    crafted = tensorflow_trainer.adversarial_examples(
        model, tf.constant(x), tf.constant(y)).numpy()
    gradient = cross_entropy_input_gradient(x, y, weights, bias)
    if norm == "linf":
        expected = x + eps * np.sign(gradient)
    else:
        length = np.sqrt((gradient.reshape(8, -1) ** 2).sum(axis=1))
        expected = x + eps * gradient / length[:, None, None, None]
    np.testing.assert_allclose(crafted, np.clip(expected, 0, 1), atol=1e-5)
    assert np.abs(crafted - x).max() > 0.5 * (eps if norm == "linf" else eps / 4)


@pytest.mark.parametrize("attack,norm,eps", [
    ("fgsm_rs", "linf", 0.1), ("pgd", "linf", 0.05), ("pgd", "l2", 0.5),
    ("fgsm_rs", "l2", 1.0)])
def test_crafted_examples_stay_in_budget_and_in_unit_box(attack, norm, eps):
    rng = np.random.default_rng(4)
    x = rng.random((32, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    model, _, _ = linear_model({"attack": attack, "norm": norm, "eps": eps})
    crafted = tensorflow_trainer.adversarial_examples(
        model, tf.constant(x), tf.constant(y)).numpy()
    assert crafted.min() >= 0.0 and crafted.max() <= 1.0
    assert attacks.distances(x, crafted, norm).max() <= eps * (1 + 1e-5)
    if attack == "pgd":
        return  # on a linear model PGD ends in the same corner from any start
    # The random start changes what the attack finds.
    fixed, _, _ = linear_model({"attack": attack, "norm": norm, "eps": eps,
                                "random_start": False})
    deterministic = tensorflow_trainer.adversarial_examples(
        fixed, tf.constant(x), tf.constant(y)).numpy()
    assert np.mean(np.abs(crafted - deterministic) > 1e-4) > 0.05


def test_random_start_follows_the_step_count_so_resume_crafts_the_same():
    rng = np.random.default_rng(5)
    x = tf.constant(rng.random((8, 4, 4, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 3, 8))
    model, _, _ = linear_model({"attack": "fgsm_rs", "eps": 0.1})
    first = tensorflow_trainer.adversarial_examples(model, x, y).numpy()
    again = tensorflow_trainer.adversarial_examples(model, x, y).numpy()
    model.optimizer.iterations.assign(1)
    later = tensorflow_trainer.adversarial_examples(model, x, y).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - later).max() > 1e-3


def bn_model(adversarial, seed=1):
    """A HaH block, then a standard block with batch norm."""
    keras.utils.set_random_seed(seed)
    model = build_vgg((4, "M", 6), hah_blocks=1, input_shape=(8, 8, 1), num_classes=3,
                      hah_alphas=0.05, name="bn_tiny")
    if adversarial is None:
        return model
    return HebbianModel.from_model(model, adversarial=adversarial)


def _moving_statistics(model):
    return [v.numpy() for v in model.non_trainable_variables if "moving" in v.path]


def test_batch_norm_statistics_are_updated_by_the_training_pass_only():
    rng = np.random.default_rng(6)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    adversarial = {"attack": "pgd", "eps": 0.3, "steps": 3,
                   "batch_norm_statistics": "adversarial"}
    model = bn_model(adversarial)
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    before = _moving_statistics(model)
    assert before, "the model has batch norm"
    tensorflow_trainer.adversarial_examples(model, tf.constant(x), tf.constant(y))
    for a, b in zip(before, _moving_statistics(model)):
        np.testing.assert_array_equal(a, b)
    # A training step moves them by exactly one update on the adversarial
    # batch: the same as a plain step on those images.
    crafted = tensorflow_trainer.adversarial_examples(model, tf.constant(x), tf.constant(y))
    model.train_on_batch(x, y)
    plain = bn_model(None)
    plain.compile(keras.optimizers.SGD(0.0), LOSS)
    plain.train_on_batch(crafted.numpy(), y)
    for a, b in zip(_moving_statistics(plain), _moving_statistics(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_clean_statistics_are_the_default_and_older_models_keep_theirs():
    # The default since the batch-norm collapse (docs/results/front.md).
    model = bn_model({"attack": "fgsm_rs", "eps": 0.1})
    assert model.adversarial["batch_norm_statistics"] == "clean"
    # A model saved before the option existed was trained on adversarial
    # statistics, and loads that way (a resumed fit keeps its behaviour).
    config = model.get_config()
    del config["adversarial"]["batch_norm_statistics"]
    assert HebbianModel.from_config(config).adversarial["batch_norm_statistics"] == (
        "adversarial")
    # A committed one of study 6 (saved before the option).
    committed = keras.models.load_model(os.path.join(
        REPO, "results/fashion_mnist_defenses/runs/standard_at_s2022/model.keras"))
    assert committed.adversarial["batch_norm_statistics"] == "adversarial"


def test_clean_batch_norm_statistics_follow_the_clean_batch_and_keep_the_step():
    rng = np.random.default_rng(6)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    options = {"attack": "pgd", "eps": 0.3, "steps": 2, "random_start": False}
    trained = {}
    for statistics in ("adversarial", "clean"):
        model = bn_model({**options, "batch_norm_statistics": statistics})
        model.compile(keras.optimizers.SGD(0.5), LOSS)
        model.train_on_batch(x, y)
        trained[statistics] = model
    # The moving statistics: a plain step's on the clean images.
    plain = bn_model(None)
    plain.compile(keras.optimizers.SGD(0.5), LOSS)
    plain.train_on_batch(x, y)
    moved = [np.abs(a - b).max() for a, b in zip(_moving_statistics(trained["adversarial"]),
                                                   _moving_statistics(trained["clean"]))]
    assert max(moved) > 1e-3  # the two options differ here
    for a, b in zip(_moving_statistics(plain), _moving_statistics(trained["clean"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The gradient step is the adversarial one either way.
    for a, b in zip(trained["adversarial"].trainable_weights, trained["clean"].trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_hah_costs_are_those_of_the_adversarial_batch():
    rng = np.random.default_rng(7)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    options = {"attack": "pgd", "eps": 0.3, "steps": 2, "random_start": False}
    model = bn_model(options)
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    crafted = tensorflow_trainer.adversarial_examples(
        model, tf.constant(x), tf.constant(y)).numpy()
    logs = model.train_on_batch(x, y, return_dict=True)
    reference = bn_model(None)
    reference.compile(keras.optimizers.SGD(0.0), LOSS)
    # Evaluation is in inference mode; the HaH block has no batch norm
    # before it, so its cost is the same in both modes.
    on_crafted, on_clean = (
        reference.evaluate(images, y, verbose=0, return_dict=True)["hah_block1_hah"]
        for images in (crafted, x))
    np.testing.assert_allclose(logs["hah_block1_hah"], on_crafted, rtol=1e-5)
    assert abs(on_crafted - on_clean) > 1e-4


def test_the_clean_batch_costs_option_is_gone_with_one_line():
    with pytest.raises(ValueError, match="adversarial.hah_costs_on") as error:
        adversarial_options({"attack": "pgd", "eps": 0.1, "hah_costs_on": "clean"})
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def fashion():
    train = data.load_arrays("fashion_mnist", "train", limit=2000)
    test = data.load_arrays("fashion_mnist", "test", limit=300)
    return train, test


def mlp(adversarial, seed=2022):
    """A standard network (no HaH block): HebbianModel only for its step."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    model = HebbianModel(inputs, keras.layers.Dense(10)(x), adversarial=adversarial)
    model.compile(keras.optimizers.Adam(2e-3), LOSS, metrics=["accuracy"])
    return model


def test_adversarially_trained_model_is_more_robust_than_its_plain_twin(fashion):
    (x, y), (x_test, y_test) = fashion
    accuracy = {}
    for name, adversarial in (("plain", None),
                              ("fgsm_rs", {"attack": "fgsm_rs", "eps": 0.1})):
        model = mlp(adversarial)
        model.fit(x, y, batch_size=50, epochs=4, shuffle=False, verbose=0)
        fn = attacks.make_model_fn(model)
        crafted = attacks.pgd(fn, x_test, y_test, 0.1, "linf", steps=10)
        accuracy[name] = (float(np.mean(attacks.predict(fn, x_test) == y_test)),
                          float(np.mean(attacks.predict(fn, crafted) == y_test)))
    clean_plain, robust_plain = accuracy["plain"]
    clean_at, robust_at = accuracy["fgsm_rs"]
    assert clean_plain > 0.7 and clean_at > 0.4, accuracy
    # Measured: plain 81% clean, 8% under PGD; FGSM-RS 56%, 37%.
    assert robust_at > robust_plain + 0.15, accuracy


def test_from_model_shares_the_layers_and_keeps_the_alphas():
    network = bn_model(None)
    model = HebbianModel.from_model(network, adversarial={"attack": "pgd", "eps": 0.1})
    assert model.hah_alphas == network.hah_alphas == [0.05]
    assert [id(w) for w in model.weights] == [id(w) for w in network.weights]
    assert model.name == network.name and model.adversarial["steps"] == 7


def test_standard_network_trains_adversarially_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlp({"attack": "fgsm_rs", "eps": 0.1})
    with pytest.warns(UserWarning, match="no HaHBlock"):
        mlp(None)


def _mirrored_program(out):
    """Run as a program (a process of its own: a second MirroredStrategy
    training in the test process collides with the other tests' collective
    ops): weights after AT on one device and on two replicas."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(8)
    x = rng.random((32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    # No random start and no batch norm: one device and two replicas then
    # craft the same examples and take the same steps.
    options = {"attack": "pgd", "eps": 0.1, "steps": 2, "random_start": False}

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(9)
            model = build_vgg((4, "M", 6), hah_blocks=2, input_shape=(8, 8, 1),
                              num_classes=3, hah_alphas=0.05, name="hah_only")
            model = HebbianModel.from_model(model, adversarial=options)
            model.compile(keras.optimizers.Adam(1e-2), LOSS)
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2,
                  shuffle=False, verbose=0)
        return model.get_weights()

    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    mirrored = tf.distribute.MirroredStrategy(devices)
    single = train(tf.distribute.get_strategy())
    double = train(mirrored)
    np.savez(out, replicas=mirrored.num_replicas_in_sync, difference=max(
        float(np.abs(a - b).max()) for a, b in zip(single, double)))


def _run_program(name, out, backend="tensorflow"):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), name, str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)


def test_mirrored_strategy_on_two_devices_matches_one_device(tmp_path):
    results = _run_program("mirrored", tmp_path / "mirrored.npz")
    assert int(results["replicas"]) == 2
    assert float(results["difference"]) < 1e-4


def test_jit_compiled_training_matches_the_graph_step():
    rng = np.random.default_rng(10)
    x = rng.random((32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    weights = {}
    for jit in (False, True):
        # XLA draws other random starts (same distribution): none here.
        model = bn_model({"attack": "pgd", "eps": 0.1, "steps": 2, "norm": "l2",
                          "random_start": False})
        model.compile(keras.optimizers.Adam(1e-2), LOSS, jit_compile=jit)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights[jit] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_keras_file_round_trip_keeps_the_options_and_resumes_the_same(tmp_path,
                                                                      resumed_training):
    rng = np.random.default_rng(11)
    x = rng.random((32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    options = {"attack": "pgd", "eps": 0.1, "steps": 2}

    def compiled():
        model = bn_model(options)
        model.compile(keras.optimizers.Adam(1e-2), LOSS)
        return model

    def check(reloaded, interrupted):
        assert reloaded.adversarial == adversarial_options(options)
        assert reloaded.adversarial["step_size"] == pytest.approx(2.5 * 0.1 / 2)

    resumed_training(compiled, x, y, str(tmp_path / "model.keras"), check)


@pytest.mark.parametrize("options,message", [
    ({"attack": "cw", "eps": 0.1}, "adversarial.attack"),
    ({"attack": "pgd"}, "adversarial.eps"),
    ({"attack": "pgd", "eps": 0.1, "norm": "l1"}, "adversarial.norm"),
    ({"attack": "fgsm_rs", "eps": 0.1, "steps": 3}, "adversarial.steps"),
    ({"attack": "pgd", "eps": 0.1, "steps": 0}, "adversarial.steps"),
    ({"attack": "pgd", "eps": 0.1, "hah_costs_on": "both"}, "adversarial.hah_costs_on"),
    ({"attack": "pgd", "eps": 0.1, "epsilon": 0.1}, "adversarial.epsilon"),
    ("pgd", "`adversarial`"),
])
def test_bad_options_raise_one_line_value_errors(options, message):
    with pytest.raises(ValueError, match=message) as error:
        adversarial_options(options)
    assert "\n" not in str(error.value) and "Received:" in str(error.value)


def test_default_step_sizes_follow_wong_and_madry():
    fgsm = adversarial_options({"attack": "fgsm_rs", "eps": 0.1})
    pgd = adversarial_options({"attack": "pgd", "eps": 0.1})
    assert (fgsm["steps"], fgsm["step_size"]) == (1, pytest.approx(0.125))
    assert (pgd["steps"], pgd["step_size"]) == (7, pytest.approx(2.5 * 0.1 / 7))
    assert fgsm["norm"] == "linf" and fgsm["random_start"] is True
    assert fgsm["hah_costs_on"] == "adversarial"


def _jax_program(out):
    """Run as a program with KERAS_BACKEND=jax: the JAX step's crafted
    examples on the linear model (L-inf, L2) and a `fit` with a random
    start, saved to `out` (.npz)."""
    from keras_hebb._trainers import jax_trainer

    rng = np.random.default_rng(3)
    x = rng.random((8, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    results = {"x": x, "y": y}
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        model, weights, bias = linear_model(
            {"attack": "pgd", "norm": norm, "eps": eps, "steps": 1, "step_size": eps,
             "random_start": False})
        model.optimizer.build(model.trainable_variables)
        state = tuple([v.value for v in variables] for variables in (
            model.trainable_variables, model.non_trainable_variables,
            model.optimizer.variables, model.metrics_variables))
        results[norm] = np.asarray(jax_trainer.adversarial_examples(model, state, x, y))
    results["weights"], results["bias"] = weights, bias
    model = bn_model({"attack": "pgd", "eps": 0.1, "steps": 2})
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    before = _moving_statistics(model)
    history = model.fit(rng.random((32, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 32),
                        batch_size=16, epochs=1, verbose=0)
    results["loss"] = np.array(history.history["loss"][-1])
    results["statistics_moved"] = np.array(max(
        float(np.abs(a - b).max()) for a, b in zip(before, _moving_statistics(model))))
    # batch_norm_statistics="clean": a plain step's statistics on the clean batch.
    images, labels = rng.random((16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 16)
    stepped = {}
    for name, options in (("clean", {"attack": "pgd", "eps": 0.3, "steps": 2,
                                       "batch_norm_statistics": "clean"}), ("plain", None)):
        model = bn_model(options)
        model.compile(keras.optimizers.SGD(0.0), LOSS)
        model.train_on_batch(images, labels)
        stepped[name] = _moving_statistics(model)
    results["clean_statistics_gap"] = np.array(max(
        float(np.abs(a - b).max()) for a, b in zip(stepped["clean"], stepped["plain"])))
    np.savez(out, **results)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_step_crafts_the_closed_form_and_trains(tmp_path):
    results = _run_program("jax", tmp_path / "jax.npz", backend="jax")
    x, y = results["x"], results["y"]
    gradient = cross_entropy_input_gradient(x, y, results["weights"], results["bias"])
    np.testing.assert_allclose(results["linf"], np.clip(x + 0.1 * np.sign(gradient), 0, 1),
                               atol=1e-5)
    length = np.sqrt((gradient.reshape(len(x), -1) ** 2).sum(axis=1))[:, None, None, None]
    np.testing.assert_allclose(results["l2"], np.clip(x + 0.5 * gradient / length, 0, 1),
                               atol=1e-5)
    assert np.isfinite(results["loss"]) and results["statistics_moved"] > 0
    assert results["clean_statistics_gap"] < 1e-5


if __name__ == "__main__":
    {"jax": _jax_program, "mirrored": _mirrored_program}[sys.argv[1]](sys.argv[2])
