"""The sanity checks: each fails on a model built to fail it, a check whose
attacks did not run says `not run` (never `pass`), and the suite leaves the
caller's global state (matplotlib's backend, TensorFlow's seed) alone."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hebb.layers import FractionalThreshold
from keras_hebb.robustness import checks, report, suite


def _constant_model():
    """Always class 0 whatever the input: zero gradients, no budget breaks it."""
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.zeros((16, 2), "float32"), np.array([1.0, 0.0], "float32")])
    return model


def _linear_model(threshold=False):
    """Class 1 iff the image's mean exceeds 0.5 (a top-k threshold first:
    a model with a threshold)."""
    inputs = keras.Input((4, 4, 1))
    x = FractionalThreshold(0.5)(inputs) if threshold else inputs
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    scale = 2.0 if threshold else 1.0  # the threshold keeps half the pixels
    dense.set_weights([np.stack([np.zeros(16), np.full(16, scale / 16)], 1).astype("float32"),
                       np.array([0.0, -0.5], "float32")])
    return model


def _images(n=20):
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 0.4, (n, 4, 4, 1)).astype("float32"), np.zeros(n, np.int64)


def _records(gaps=None, kinds=()):
    """One Linf record; `gaps`: column -> accuracy; stages of `kinds` that
    attack every standing image."""
    columns = {"gradient_only": 0.5, "plain_gradients": 0.5, "white_box": 0.5,
               "worst_case": 0.5, **(gaps or {})}
    stages = [{"stage": name, "attack": name, "kind": kind, "attacked": 10, "fooled": 0}
              for name, kind in kinds]
    return [{"norm": "linf", "budget": 0.1, "robust_accuracy": columns["worst_case"],
             "columns": columns, "stages": stages}]


def _config(**changes):
    return dataclasses.replace(suite.QUICK, check_images=20, check_steps=(3, 6),
                               large_budget_steps=5, **changes)


def test_an_unbreakable_constant_model_fails_gradients_and_both_large_budgets():
    x, y = _images()
    target = suite._ModelUnderTest("constant", _constant_model())
    result = checks.sanity_checks(target, x, y, _records(), _config(), 0)
    for name in ("gradients", "large_budget", "large_budget_l2"):
        assert result[name]["status"] == "fail", name
        assert result[name]["passed"] is False
    assert result["large_budget"]["accuracy"] == 1.0
    assert result["large_budget_l2"]["norm"] == "l2"
    # Half the square root of the pixel values: holds the Linf 0.5 cube.
    assert result["large_budget_l2"]["budget"] == pytest.approx(0.5 * 4)


def test_a_breakable_model_passes_both_large_budgets():
    x, y = _images()
    target = suite._ModelUnderTest("linear", _linear_model())
    result = checks.sanity_checks(target, x, y, _records(), _config(), 0)
    assert result["large_budget"]["status"] == "pass"
    assert result["large_budget_l2"]["status"] == "pass"
    assert result["large_budget_l2"]["accuracy"] == 0.0


def test_masking_checks_without_their_attacks_say_not_run():
    records = _records(kinds=[("pgd_ce", "gradient"), ("spsa", "black_box")])
    bpda = checks._check_bpda_adds_little(records)
    black = checks._check_black_box_not_stronger(records)
    # SPSA's subset cannot move the gap by the margin: not a black-box run.
    for check in (bpda, black):
        assert check["passed"] is None and not check["ran"]


def test_bpda_check_fails_when_bpda_breaks_what_plain_gradients_could_not():
    records = _records({"white_box": 0.4, "worst_case": 0.4}, kinds=[("bpda", "bpda")])
    check = checks._check_bpda_adds_little(records)
    assert check["passed"] is False and check["largest_gap"] == pytest.approx(0.1)
    small = _records({"white_box": 0.49, "worst_case": 0.49}, kinds=[("bpda", "bpda")])
    assert checks._check_bpda_adds_little(small)["passed"] is True


def test_black_box_check_fails_when_black_box_beats_white_box():
    records = _records({"worst_case": 0.3}, kinds=[("square", "black_box")])
    check = checks._check_black_box_not_stronger(records)
    assert check["passed"] is False and check["largest_gap"] == pytest.approx(0.2)
    spsa_strong = _records(kinds=[("square", "black_box"), ("spsa", "black_box")])
    spsa_strong[0]["stages"][1]["fooled"] = 5  # 50% of its subset
    assert checks._check_black_box_not_stronger(spsa_strong)["passed"] is False


def test_quick_preset_runs_a_black_box_attack_on_every_standing_image():
    assert "square" in suite.QUICK.attacks
    records = _records(kinds=[("square", "black_box")])
    assert checks._check_black_box_not_stronger(records)["ran"]


def test_summary_fails_a_thresholded_model_whose_masking_check_did_not_run():
    unrun = {"gradients": {"passed": True}, "bpda_adds_little": {"passed": None}}
    assert checks.summary(unrun, has_threshold=True) == (False, False)
    assert checks.summary(unrun, has_threshold=False) == (True, False)
    failed = {"gradients": {"passed": False}, "bpda_adds_little": {"passed": True}}
    assert checks.summary(failed, has_threshold=False) == (False, True)


def test_suite_without_bpda_on_a_thresholded_model_is_not_a_pass(tmp_path):
    x, y = _images(12)
    config = _config(linf_budgets=(0.05,), l2_budgets=(), noise_sigmas=(0.1,),
                     noise_draws=1, attacks=("fgsm", "pgd_ce"))
    results = suite.run_suite({"thresholded": _linear_model(threshold=True)}, x, y, config,
                              seed=0, progress=False)
    entry = results["models"]["thresholded"]
    assert entry["checks"]["bpda_adds_little"]["status"] == "not run"
    assert entry["checks"]["black_box_not_stronger"]["status"] == "not run"
    assert entry["checks_passed"] is False and entry["checks_complete"] is False
    markdown = report.markdown(results).split("## Sanity checks")[1]
    row = next(line for line in markdown.splitlines() if line.startswith("| thresholded |"))
    assert row.count("| not run") == 2


def test_the_suite_leaves_the_callers_global_state_alone(tmp_path):
    import matplotlib
    from tensorflow.python.eager import context

    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a notebook's choice, not Agg
    try:
        x, y = _images(8)
        config = _config(linf_budgets=(0.05,), l2_budgets=(0.5,), noise_sigmas=(0.1,),
                         noise_draws=1, attacks=("fgsm", "pgd_ce", "transfer"))
        tf.random.set_seed(123)
        first = tf.random.uniform([3]).numpy()
        models = {"a": _linear_model(), "b": _linear_model()}
        results = suite.run_suite(models, x, y, config, seed=7, progress=False)
        report.write_report(results, str(tmp_path))
        after = tf.random.uniform([3]).numpy()
        assert matplotlib.get_backend() == "svg"
        assert context.global_seed() == 123
        # The caller's stream of draws goes on as if the suite had not run.
        tf.random.set_seed(123)
        np.testing.assert_array_equal(tf.random.uniform([3]).numpy(), first)
        np.testing.assert_array_equal(tf.random.uniform([3]).numpy(), after)
        assert (tmp_path / "noise.png").stat().st_size > 0
    finally:
        matplotlib.use(backend)
