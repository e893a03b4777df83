"""Randomized smoothing: closed form of a linear classifier, the CLI."""

import json

import keras
import numpy as np
import pytest
from scipy import stats

from keras_hebb.robustness import attacks, smoothing


def _binary_linear(n=40, side=8, seed=0, sigma=0.25):
    """f(x) = [w.x + b > 0] on gray images; under N(0, sigma^2 I) noise
    P(f(x + e) = f(x)) = Phi(|w.x + b| / (sigma ||w||)), so the smoothed
    classifier's true radius is `|w.x + b| / ||w||` (the distance to the
    decision boundary)."""
    rng = np.random.default_rng(seed)
    dim = side * side
    w = rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
    x = rng.uniform(0.0, 1.0, (20 * n, side, side, 1)).astype(np.float32)
    score = x.reshape(len(x), -1).astype(np.float64) @ w - 0.5 * w.sum()
    distance = np.abs(score) / np.linalg.norm(w)
    p = stats.norm.cdf(distance / sigma)
    keep = np.flatnonzero((p > 0.6) & (p < 0.995))[:n]
    assert len(keep) == n
    inputs = keras.Input((side, side, 1))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    # logit 0 = 0, logit 1 = w.x + b.
    dense.set_weights([np.stack([np.zeros(dim, np.float32), w], axis=1),
                       np.array([0.0, -0.5 * w.sum()], np.float32)])
    labels = (score[keep] > 0).astype(np.int64)
    return model, x[keep], labels, distance[keep], p[keep]


def test_linear_certified_radius_matches_closed_form():
    sigma, n, alpha = 0.25, 4000, 0.001
    model, x, labels, distance, p = _binary_linear(sigma=sigma)
    fn = attacks.make_model_fn(model)
    prediction, radius, p_lower = smoothing.certify(fn, x, sigma, 2, n0=100, n=n,
                                                    alpha=alpha, seed=0)
    # The count of the top class is Binomial(n, p): within 4.5 standard
    # deviations of n p, the Clopper-Pearson bound (the slack) lies between
    # these two, and so does the certified radius.
    spread = 4.5 * np.sqrt(n * p * (1 - p))
    low = smoothing.clopper_pearson_lower(np.floor(n * p - spread), n, alpha)
    high = smoothing.clopper_pearson_lower(np.minimum(np.ceil(n * p + spread), n), n, alpha)
    assert np.all((p_lower >= low) & (p_lower <= high))
    certified = p_lower >= 0.5
    expected_low = np.where(low >= 0.5, sigma * stats.norm.ppf(np.clip(low, 0.5, 1)), 0.0)
    assert np.all(radius >= expected_low - 1e-9)
    # Never more than the true radius (here for every image; in general with
    # probability >= 1 - alpha per image).
    assert np.all(radius <= distance + 1e-6)
    np.testing.assert_array_equal(prediction[certified], labels[certified])
    assert np.all(prediction[~certified] == smoothing.ABSTAIN)
    assert certified.mean() >= 0.8
    # Clopper-Pearson: exact binomial bound.
    assert smoothing.clopper_pearson_lower(0, 100, 0.01) == 0.0
    np.testing.assert_allclose(smoothing.clopper_pearson_lower(100, 100, 0.01), 0.01 ** 0.01)
    accuracy = smoothing.certified_accuracy(prediction, radius, labels, (0.0, 10.0))
    assert accuracy[0] == pytest.approx(certified.mean()) and accuracy[1] == 0.0
    with pytest.raises(ValueError, match="sigma"):
        smoothing.certify(fn, x, 0.0, 2)


def test_evaluate_certifies_and_reports(tmp_path):
    from training import evaluate

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    out = tmp_path / "report"
    status = evaluate.main([
        "--model", path, "--images", "12", "--out", str(out), "--attacks", "fgsm",
        "--linf-budgets", "0.1", "--l2-budgets", "", "--noise-sigmas", "0.1",
        "--certify-sigmas", "0.12,0.25", "--certify-images", "6", "--certify-n", "64",
        "--certify-n0", "16", "--no-progress"])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    certified = report["models"]["tiny"]["certified"]
    assert [c["sigma"] for c in certified] == [0.12, 0.25]
    assert certified[0]["images"] == 6 and len(certified[0]["radius"]) == 6
    assert report["settings"]["certify"]["n"] == 64
    assert "Certified L2 robustness" in (out / "report.md").read_text()
    assert (out / "certified_l2.png").stat().st_size > 1000
    assert evaluate.main(["--model", path, "--certify-sigmas", "0,0.25",
                          "--out", str(tmp_path / "o")]) == 2
