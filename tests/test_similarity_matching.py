"""Similarity-matching layers and their local learning through `model.fit`.

Checked against numpy: the principal subspace (linear layer), the fixed
points of the dynamics (KKT conditions), the local rules themselves, and
the connectivity of the structured layer; plus real Fashion-MNIST sparsity,
convergence of the deep network, argument checks and `.keras` round trips.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hebb
from keras_hebb.data import load_arrays
from keras_hebb.layers import (
    DeepSimilarityMatching,
    SimilarityMatching,
    StructuredSimilarityMatching,
)
from keras_hebb.similarity_matching_model import SimilarityMatchingModel

SUBSPACE_ERROR_BOUND = 1e-3


def numpy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


@pytest.fixture(scope="module")
def fashion_centered():
    """1024 real Fashion-MNIST images, flattened, minus the pixel means."""
    images, _ = load_arrays("fashion_mnist", "train", limit=1024)
    flat = images.reshape(len(images), -1)
    return flat - flat.mean(axis=0)


def known_spectrum_data(n=2048, seed=0):
    """Zero-mean data in 10-D whose covariance has eigenvalues `spectrum`."""
    rng = np.random.default_rng(seed)
    spectrum = np.array([6.0, 4.0, 3.0, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1])
    basis, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    x = (rng.normal(size=(n, 10)) * np.sqrt(spectrum)) @ basis.T
    return x.astype("float32")


def dense_model(layer, inputs_dim, **kwargs):
    inputs = keras.Input((inputs_dim,))
    return SimilarityMatchingModel(inputs, layer(inputs), **kwargs)


# ------------------------------------------------------------ linear: PCA


def test_linear_similarity_matching_recovers_the_principal_subspace():
    keras.utils.set_random_seed(1)
    x = known_spectrum_data()
    k = 3
    layer = SimilarityMatching(k)
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.05, 100, 1.0)
    model = dense_model(layer, 10, learning_rate=schedule)
    model.compile()
    model.fit(x, batch_size=64, epochs=4, verbose=0)

    # numpy PCA of the (uncentered) second moment, which the network sees.
    _, vectors = np.linalg.eigh(x.T.astype("float64") @ x / len(x))
    top = vectors[:, -k:]
    filters = numpy(layer.filters())  # F = M^-1 W, k x d
    projector = filters.T @ np.linalg.solve(filters @ filters.T, filters)
    subspace_error = np.sum((projector - top @ top.T) ** 2) / k
    assert subspace_error < SUBSPACE_ERROR_BOUND
    # At the fixed point of the rules the filters are orthonormal.
    np.testing.assert_allclose(filters @ filters.T, np.eye(k), atol=0.1)


def test_linear_output_is_m_inverse_w_x():
    keras.utils.set_random_seed(2)
    layer = SimilarityMatching(4)
    x = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
    layer.build(x.shape)
    lateral = np.eye(4) + 0.2 * np.ones((4, 4))
    layer.lateral.assign(lateral.astype("float32"))
    w = numpy(layer.kernel).T
    expected = (np.linalg.solve(lateral, w @ x.T)).T
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- locality


def test_local_rules_use_only_each_layers_own_activity_and_spare_the_head():
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(1).normal(size=(32, 12)).astype("float32")
    inputs = keras.Input((12,))
    first = SimilarityMatching(6, non_negative=True, name="sm1")
    second = SimilarityMatching(3, tau=2.0, name="sm2")  # linear
    head = keras.layers.Dense(2, name="head")
    model = SimilarityMatchingModel(
        inputs, head(second(first(inputs))), learning_rate=0.1
    )
    model.compile()
    before = {v.path: numpy(v) for v in model.weights}
    y1 = numpy(first(x))
    y2 = numpy(second(y1.astype("float32")))

    model.train_on_batch(x)

    def expected(pre, post, kernel, lateral, tau):
        return (kernel + 0.1 * (pre.T @ post / len(pre) - kernel),
                lateral + 0.1 / tau * (post.T @ post / len(pre) - lateral))

    for layer, pre, post in ((first, x, y1), (second, y1, y2)):
        kernel, lateral = expected(
            pre.astype("float64"), post, before[layer.kernel.path],
            before[layer.lateral.path], layer.tau,
        )
        np.testing.assert_allclose(numpy(layer.kernel), kernel, atol=1e-5)
        np.testing.assert_allclose(numpy(layer.lateral), lateral, atol=1e-5)
    for weight in head.weights:
        np.testing.assert_array_equal(numpy(weight), before[weight.path])
    assert int(model.local_step.numpy()) == 1


def test_a_supervised_loss_trains_the_head_but_never_the_similarity_weights():
    keras.utils.set_random_seed(4)
    x = np.random.default_rng(2).normal(size=(32, 12)).astype("float32")
    labels = np.arange(32) % 2
    inputs = keras.Input((12,))
    sm = SimilarityMatching(5, non_negative=True)
    head = keras.layers.Dense(2)
    model = SimilarityMatchingModel(inputs, head(sm(inputs)), local_updates=False)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.5), loss)
    assert [v.path for v in model.trainable_weights] == [
        v.path for v in head.weights]
    with tf.GradientTape() as tape:
        value = loss(labels, model(x))
    assert tape.gradient(value, sm.kernel) is None

    sm_before = [numpy(v) for v in sm.weights]
    head_before = [numpy(v) for v in head.weights]
    logs = model.fit(x, labels, batch_size=32, epochs=2, verbose=0).history
    for weight, value in zip(sm.weights, sm_before):
        np.testing.assert_array_equal(numpy(weight), value)
    assert any(not np.allclose(numpy(w), v) for w, v in zip(head.weights, head_before))
    assert logs["loss"][-1] > 0 and "sm_objective" in logs


def test_backprop_reaches_the_similarity_weights_only_when_asked():
    x = np.random.default_rng(3).normal(size=(8, 6)).astype("float32")
    for layer in (SimilarityMatching(3, train_by_backprop=True),
                  DeepSimilarityMatching([4, 3], train_by_backprop=True)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(layer(x) ** 2)
        gradients = tape.gradient(value, layer.trainable_weights)
        assert len(layer.trainable_weights) == len(layer.weights)
        assert all(g is not None for g in gradients)
        assert np.isfinite(numpy(gradients[0])).all()


# ---------------------------------------------------- non-negative: NSM


def test_non_negative_outputs_are_non_negative_and_sparse_on_fashion_mnist(
        fashion_centered):
    keras.utils.set_random_seed(5)
    layer = SimilarityMatching(16, non_negative=True)
    model = dense_model(layer, 784, learning_rate=0.02)
    model.compile()
    silent_before = float(np.mean(numpy(layer(fashion_centered)) == 0))
    model.fit(fashion_centered, batch_size=128, epochs=4, verbose=0)
    y = numpy(layer(fashion_centered))
    assert y.min() >= 0.0
    silent = float(np.mean(y == 0))
    # Most neurons are silent on each image, more than before learning
    # (measured: 0.49 before, 0.72 after).
    assert silent > 0.6 and silent > silent_before + 0.1
    assert (y > 0).sum(axis=1).min() >= 1  # no image is lost entirely
    assert float(layer.fixed_point_residual(fashion_centered)) <= layer.tolerance


def _kkt_violation(x, states, kernels, laterals, gamma):
    """numpy: max |min(y, grad / diag M)| over the joint fixed point."""
    worst = 0.0
    for l, y in enumerate(states):
        below = x if l == 0 else states[l - 1]
        grad = y @ laterals[l] - below @ kernels[l]
        if l + 1 < len(states):
            grad -= gamma * states[l + 1] @ kernels[l + 1].T
        scaled = grad / np.diag(laterals[l])
        worst = max(worst, np.abs(np.minimum(y, scaled)).max() / np.abs(y).max())
    return worst


# ------------------------------------------------------------------ deep


def test_deep_dynamics_converge_and_the_objective_decreases(fashion_centered):
    keras.utils.set_random_seed(6)
    data = fashion_centered[:512]
    layer = DeepSimilarityMatching([32, 16], gamma=0.2, tolerance=1e-5,
                                   iterations=1000)
    model = dense_model(layer, 784, learning_rate=0.03)
    model.compile()
    start = model.evaluate(data, batch_size=512, verbose=0, return_dict=True)
    history = model.fit(data, batch_size=128, epochs=4, verbose=0).history
    end = model.evaluate(data, batch_size=512, verbose=0, return_dict=True)

    objective = history["sm_objective"]
    assert all(b < a for a, b in zip(objective, objective[1:]))
    assert end["sm_objective"] < 0.8 * start["sm_objective"]
    assert max(history["sm_residual"]) <= 1e-5
    # The returned states satisfy the fixed-point (KKT) conditions of the
    # joint dynamics, checked independently in numpy.
    sample = data[:256]
    states = [numpy(s) for s in layer.states(sample)]
    kernels = [numpy(k) for k in layer.kernels]
    laterals = [numpy(m) for m in layer.laterals]
    assert min(s.min() for s in states) >= 0.0
    assert _kkt_violation(sample, states, kernels, laterals, 0.2) < 1e-3
    np.testing.assert_allclose(numpy(layer(sample)), states[-1], atol=1e-6)


def test_deep_local_update_of_the_second_layer_uses_the_first_layers_states():
    keras.utils.set_random_seed(7)
    x = np.random.default_rng(4).normal(size=(16, 10)).astype("float32")
    layer = DeepSimilarityMatching([6, 4], gamma=0.3, tau=1.0)
    model = dense_model(layer, 10, learning_rate=0.05)
    model.compile()
    y1, y2 = (numpy(s) for s in layer.states(x))
    k2, m2 = numpy(layer.kernels[1]), numpy(layer.laterals[1])
    model.train_on_batch(x)
    np.testing.assert_allclose(
        numpy(layer.kernels[1]), k2 + 0.05 * (y1.T @ y2 / 16 - k2), atol=1e-5)
    np.testing.assert_allclose(
        numpy(layer.laterals[1]), m2 + 0.05 * (y2.T @ y2 / 16 - m2), atol=1e-5)


# ------------------------------------------------------------ structured


def test_structured_layer_keeps_local_receptive_fields_and_lateral_neighbourhoods():
    keras.utils.set_random_seed(8)
    images, _ = load_arrays("fashion_mnist", "train", limit=256)
    layer = StructuredSimilarityMatching(2, kernel_size=8, strides=4,
                                         lateral_radius=1)
    inputs = keras.Input((28, 28, 1))
    model = SimilarityMatchingModel(inputs, layer(inputs), learning_rate=0.05)
    model.compile()
    model.fit(images - images.mean(axis=0), batch_size=128, epochs=2, verbose=0)
    assert layer.grid == (6, 6)
    assert tuple(layer(images[:3]).shape) == (3, 6, 6, 2)

    kernel = numpy(layer.kernel).reshape(28, 28, 1, 6, 6, 2)
    # Neuron at site (2, 3) sees rows 8..15, columns 12..19 only.
    field = np.abs(kernel[:, :, 0, 2, 3, 0]) > 0
    expected = np.zeros((28, 28), bool)
    expected[8:16, 12:20] = True
    np.testing.assert_array_equal(field, expected)
    lateral = numpy(layer.lateral).reshape(6, 6, 2, 6, 6, 2)
    assert np.all(lateral[0, 0, :, 2:, :, :] == 0)  # sites two apart
    assert np.all(lateral[0, 0, :, 1, 1, :] != 0)   # diagonal neighbours
    assert layer.receptive_fields().shape == (6, 6, 2, 8, 8, 1)
    y = numpy(layer(images[:64] - images.mean(axis=0)))
    assert y.min() >= 0 and np.mean(y == 0) > 0.3


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "build, name, value",
    [
        (lambda: dense_model(SimilarityMatching(2), 4, learning_rate=0.0),
         "learning_rate", "0.0"),
        (lambda: dense_model(SimilarityMatching(2), 4, learning_rate=-1e-3),
         "learning_rate", "-0.001"),
        (lambda: SimilarityMatching(2, iterations=0), "iterations", "0"),
        (lambda: SimilarityMatching(2, iterations=-5), "iterations", "-5"),
        (lambda: DeepSimilarityMatching([4, 2], iterations=2.5),
         "iterations", "2.5"),
        (lambda: DeepSimilarityMatching([4, 2], gamma=1.0), "gamma", "1.0"),
        (lambda: DeepSimilarityMatching([4, 2], gamma=-0.1), "gamma", "-0.1"),
        (lambda: SimilarityMatching(0), "units", "0"),
        (lambda: DeepSimilarityMatching([]), "units", "[]"),
        (lambda: SimilarityMatching(2, tau=0), "tau", "0"),
        (lambda: StructuredSimilarityMatching(2, lateral_radius=-1),
         "lateral_radius", "-1"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(build, name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name}={value}")):
        build()


def test_model_without_similarity_matching_layers_is_refused():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="at least one SimilarityMatching"):
        SimilarityMatchingModel(inputs, keras.layers.Dense(2)(inputs))


def test_a_loss_without_an_optimizer_is_refused_at_compile():
    model = dense_model(SimilarityMatching(2), 4)
    with pytest.raises(ValueError, match=re.escape("Received: optimizer=None")):
        model.compile(optimizer=None, loss="mse")
    model.compile()  # purely local learning: no optimizer needed
    assert model.optimizer is None


# ------------------------------------------------------- schedule, saving


def test_learning_rate_schedule_follows_the_local_step():
    x = known_spectrum_data(256)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
    model = dense_model(SimilarityMatching(2), 10, learning_rate=schedule)
    model.compile()
    rates = model.fit(x, batch_size=64, epochs=2, verbose=0).history[
        "sm_learning_rate"]
    # Epoch means of 0.1 * 0.5^(step / 4) over steps 0-3 and 4-7.
    expected = [np.mean([0.1 * 0.5 ** (s / 4) for s in steps])
                for steps in (range(4), range(4, 8))]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    assert int(model.local_step.numpy()) == 8


def test_keras_file_round_trip_restores_outputs_schedule_and_learning(tmp_path):
    keras.utils.set_random_seed(9)
    images, _ = load_arrays("fashion_mnist", "train", limit=128)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Normalization(mean=0.286, variance=1.0)(inputs)
    x = StructuredSimilarityMatching(2, kernel_size=14, strides=7,
                                     iterations=50)(x)
    x = keras.layers.Flatten()(x)
    x = DeepSimilarityMatching([6, 4], gamma=0.1, iterations=100)(x)
    outputs = keras.layers.Dense(10)(x)
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.02, 10, 0.5)
    model = SimilarityMatchingModel(inputs, outputs, learning_rate=schedule)
    model.compile()
    model.fit(images, batch_size=64, epochs=1, verbose=0)
    path = str(tmp_path / "sm.keras")
    model.save(path)

    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, keras_hebb.SimilarityMatchingModel)
    assert len(reloaded.similarity_matching_layers) == 2
    for original, copy in zip(model.layers, reloaded.layers):
        assert original.get_config() == copy.get_config()
    assert isinstance(reloaded.learning_rate,
                      keras.optimizers.schedules.InverseTimeDecay)
    assert int(reloaded.local_step.numpy()) == 2
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               model.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-5)
    # Local learning continues from the restored state in both models alike.
    model.fit(images, batch_size=64, epochs=1, verbose=0)
    reloaded.fit(images, batch_size=64, epochs=1, verbose=0)
    for original, copy in zip(model.weights, reloaded.weights):
        np.testing.assert_allclose(numpy(copy), numpy(original), atol=1e-5)


# ------------------------------------------------------------------ example


def test_example_learns_filters_and_reports_clean_and_noisy_accuracy(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "examples", "similarity_matching.py")
    command = [sys.executable, script, "--train", "2000", "--test", "300",
               "--units", "16", "--sm-epochs", "2", "--classifier-epochs", "20",
               "--draws", "1", "--sigmas", "0.2", "--skip-baselines",
               "--output-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    scores = results["models"]["sm_nsm+linear"]
    # The filters learn: the similarity mismatch falls from the first epoch
    # to the second (550 -> 387 measured), and a linear read-out of the
    # features beats chance (0.1) by far (0.54 clean, 0.54 at sigma 0.2).
    objective = results["sm"]["objective"]
    assert len(objective) == 2 and objective[1] < 0.9 * objective[0]
    assert scores["clean"] > 0.3 and set(scores["noise"]) == {"0.2"}
    assert scores["noise"]["0.2"] > 0.2
    assert (tmp_path / "filters_nsm.png").stat().st_size > 1000
    bad = subprocess.run(command + ["--units", "0"], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --units must be > 0, got 0"]
