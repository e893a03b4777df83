"""The escalation rule (`keras_hebb.robustness.escalation`): a model that
shows a sign of gradient masking is attacked again with Square at
AutoAttack's strength, and a check names the gap; a model without a sign
keeps its time and passes. Tiny hand-built models, no training."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_hebb.robustness import checks, escalation, report, suite

SIDE = 8


class StepQuantization(keras.layers.Layer):
    """A user's own rounding to {0, 0.5} (`x > 0.25`), with no declared
    surrogate: its gradient is zero everywhere, so gradient attacks stall."""

    def call(self, x):
        return 0.5 * keras.ops.cast(x > 0.25, x.dtype)


def _counting_model(quantize):
    """Class 1 iff more than 52 of the 64 pixels are above 0.25 (after the
    rounding if `quantize`, else the pixels themselves, a linear model)."""
    inputs = keras.Input((SIDE, SIDE, 1))
    x = StepQuantization()(inputs) if quantize else inputs
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.Flatten()(x))
    scale = 1.0 if quantize else 0.5 / 0.25  # the linear one counts pixel mass
    dense.set_weights([np.stack([np.zeros(SIDE * SIDE), np.full(SIDE * SIDE, scale)], 1)
                       .astype("float32"), np.array([0.0, -26.5], "float32")])
    return keras.Model(inputs, outputs)


def _images(n=16):
    rng = np.random.default_rng(0)
    return (rng.uniform(0.0, 0.2, (n, SIDE, SIDE, 1)).astype("float32"),
            np.zeros(n, np.int64))


def _config(square_queries, **changes):
    """A small suite: FGSM, PGD, a (user-chosen, weak) Square; escalation on."""
    return dataclasses.replace(
        suite.QUICK, linf_budgets=(0.3,), l2_budgets=(), noise_sigmas=(0.1,), noise_draws=1,
        attacks=("fgsm", "pgd_margin", "square"), check_images=16, check_steps=(3, 6),
        large_budget_steps=5, escalate=True, **changes,
    ).with_settings(square={"queries": square_queries})


def _agrees_with_smallest_budgets(entry):
    """Each record's accuracy is that of the images whose smallest breaking
    budget is above it (the escalation's breaks are in both)."""
    smallest = np.array([np.inf if v is None else v
                         for v in entry["smallest_breaking_budget"]["linf"]])
    return all(record["robust_accuracy"] == pytest.approx(np.mean(smallest > record["budget"]))
               for record in entry["attacks"]["linf"])


def test_a_rounding_layer_the_model_does_not_declare_is_escalated_and_named():
    x, y = _images()
    model = _counting_model(quantize=True)
    config = dataclasses.replace(_config(1), linf_budgets=(0.25, 0.3))
    results = suite.run_suite({"rounded": model}, x, y, config, seed=0, progress=False)
    entry = results["models"]["rounded"]
    # Nothing declared: no threshold layer, no surrogate; caught by behaviour.
    assert not suite._has_threshold(model) and not entry["surrogate_gradients"]
    assert entry["escalation"]["ran"]
    assert "threshold" not in entry["escalation"]["signs"]
    assert "zero_gradients" in entry["escalation"]["signs"]
    record = entry["attacks"]["linf"][0]
    # An image the escalation broke at 0.25 and the suite only at 0.3 counts at 0.25.
    assert _agrees_with_smallest_budgets(entry)
    # One query of Square leaves most images standing; 5,000 break (nearly) all.
    assert record["worst_case_before_escalation"] >= 0.5
    assert record["robust_accuracy"] <= 0.1
    assert any(s.get("escalated") and s["fooled"] for s in record["stages"])
    check = entry["checks"]["strong_attacks_add_little"]
    assert check["status"] == "fail"
    assert "L-inf 0.25" in check["message"] and "5,000 queries" in check["message"]
    assert check["largest_gap"] == pytest.approx(max(
        r["worst_case_before_escalation"] - r["robust_accuracy"]
        for r in entry["attacks"]["linf"]))
    assert entry["checks_passed"] is False
    markdown = report.markdown(results)
    assert "strong_attacks_add_little" in markdown and check["message"] in markdown


def test_without_escalation_the_same_suite_reports_the_inflated_number():
    x, y = _images()
    config = dataclasses.replace(_config(1), escalate=False)
    results = suite.run_suite({"rounded": _counting_model(True)}, x, y, config, seed=0,
                              progress=False)
    entry = results["models"]["rounded"]
    assert "escalation" not in entry and "strong_attacks_add_little" not in entry["checks"]
    assert entry["attacks"]["linf"][0]["robust_accuracy"] >= 0.5


def test_a_model_without_a_sign_of_masking_is_not_escalated_and_passes():
    x, y = _images()
    results = suite.run_suite({"linear": _counting_model(quantize=False)}, x, y,
                              _config(100), seed=0, progress=False)
    entry = results["models"]["linear"]
    assert entry["escalation"] == {**entry["escalation"], "signs": [], "ran": False}
    record = entry["attacks"]["linf"][0]
    assert not any(s.get("escalated") for s in record["stages"])
    assert "worst_case_before_escalation" not in record
    check = entry["checks"]["strong_attacks_add_little"]
    assert check["status"] == "pass" and not check["escalated"]


def test_a_declared_threshold_is_a_sign_even_when_every_attack_agrees():
    from keras_hebb.layers import FractionalThreshold

    inputs = keras.Input((SIDE, SIDE, 1))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(FractionalThreshold(0.5)(inputs)))
    target = suite._ModelUnderTest("thresholded", keras.Model(inputs, outputs))
    columns = {"gradient_only": 0.5, "plain_gradients": 0.5, "white_box": 0.5,
               "worst_case": 0.5}
    x, y = _images(4)
    signs = escalation.masking_signs(target, [{"columns": columns}], x, y, _config(1))
    assert signs == ["threshold"]


def test_escalated_config_runs_square_alone_at_autoattack_strength():
    config = escalation.escalated_config(suite.FULL)
    assert config.attacks == ("square",) and not config.escalate
    assert config.attack_settings["square"]["queries"] == 5000
    assert config.linf_budgets == suite.FULL.linf_budgets
    assert suite.FULL.escalate and not suite.QUICK.escalate


def test_a_gap_check_never_fails_on_two_images():
    # 50 images: a 4-point gap is two images, sampling noise (hah_pgd_at's
    # bpda_adds_little on 50 images); three images fail.
    def records(gap):
        return [{"norm": "linf", "budget": 0.05, "robust_accuracy": 0.5,
                 "columns": {"plain_gradients": 0.5 + gap, "white_box": 0.5,
                             "worst_case": 0.5},
                 "stages": [{"stage": "bpda", "attack": "bpda", "kind": "bpda"}]}]

    assert checks._check_bpda_adds_little(records(0.04), 50)["passed"] is True
    failed = checks._check_bpda_adds_little(records(0.06), 50)
    assert failed["passed"] is False and "L-inf 0.05" in failed["message"]
    assert checks.tolerance(500) == checks.CHECK_MARGIN
    assert checks.tolerance(50) == pytest.approx(0.04)


def test_autoattack_at_standard_strength_is_not_escalated_again():
    config = suite.with_autoattack_standard(suite.FULL)
    assert not config.escalate
    assert config.attack_settings["square"]["queries"] == escalation.ESCALATED_SQUARE_QUERIES


def test_an_interrupted_escalation_is_read_back_with_the_same_numbers(tmp_path):
    x, y = _images(8)
    model = _counting_model(quantize=True)
    first = suite.run_suite({"rounded": model}, x, y, _config(1), seed=0, progress=False,
                            resume_dir=str(tmp_path))
    assert (tmp_path / "rounded.linf_escalated.json").exists()
    again = suite.run_suite({"rounded": model}, x, y, _config(1), seed=0, progress=False,
                            resume_dir=str(tmp_path))
    for key in ("attacks", "smallest_breaking_budget"):
        assert again["models"]["rounded"][key] == first["models"]["rounded"][key]
    # The time read back is counted in the escalation's seconds.
    saved = json.loads((tmp_path / "rounded.linf_escalated.json").read_text())["seconds"]
    assert saved > 0
    assert again["models"]["rounded"]["escalation"]["seconds"] >= round(saved, 3)


def test_the_escalation_check_fails_beyond_two_points_and_two_images():
    def records(gain):
        return [{"norm": "l2", "budget": 0.5, "escalation_gain": gain}]

    ran = {"ran": True, "signs": ["threshold"], "attacks": {"square": {"queries": 5000}}}
    assert checks._check_strong_attacks_add_little(records(0.02), ran, 100)["passed"]
    failed = checks._check_strong_attacks_add_little(records(0.03), ran, 100)
    assert failed["passed"] is False and "L2 0.5" in failed["message"]
    # On 50 images two images (4 points) still pass.
    assert checks._check_strong_attacks_add_little(records(0.04), ran, 50)["passed"]


def test_evaluate_prints_the_gap_a_failed_check_names(monkeypatch, capsys):
    from training import evaluate

    x, y = _images(8)
    results = suite.run_suite({"rounded": _counting_model(True)}, x, y, _config(1), seed=0,
                              progress=False)
    monkeypatch.setattr(evaluate, "run", lambda args: (results, ["report.md"]))
    assert evaluate.main(["--model", "m.keras", "--suite", "full"]) == 0
    printed = capsys.readouterr().out
    message = results["models"]["rounded"]["checks"]["strong_attacks_add_little"]["message"]
    assert "FAILED" in printed and f"  strong_attacks_add_little: {message}" in printed
    signs = next(line for line in printed.splitlines() if "signs of gradient masking" in line)
    assert "zero_gradients" in signs and "threshold" not in signs
