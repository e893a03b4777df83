"""The production cascade (`cascade.evaluate_norm`) with fake attacks.

A two-logit linear model on 1x1x2 "images" whose class is 1 iff pixel 0
exceeds 0.5; fake attacks registered for the test break exactly the
(image, budget) pairs they are told to, by moving pixel 0 up by eps.
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_hebb.robustness import attacks, cascade, checks, registry, suite


def _threshold_model():
    inputs = keras.Input((1, 1, 2))
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    # logit 0 = 0, logit 1 = x0 - 0.5.
    dense.set_weights([np.array([[0.0, 1.0], [0.0, 0.0]], "float32"),
                       np.array([0.0, -0.5], "float32")])
    return model


def _fake(name, kind, breaks, calls, honest=True, columns=()):
    """An attack that breaks the (image index, eps) pairs in `breaks`."""

    def craft(s):
        calls.setdefault(name, []).append((s.eps, list(s.idx)))
        out = s.images.copy()
        for row, i in enumerate(s.idx):
            if (int(i), s.eps) in breaks:
                out[row, 0, 0, 0] += s.eps if honest else 2 * s.eps
        return out

    return registry.Attack(
        name, kind, ("linf",),
        lambda settings, target, sources: [registry.Stage(name, name, 0, {})], craft,
        columns=columns)


def _run(monkeypatch, fakes, budgets=(0.1, 0.2)):
    for attack in fakes:
        monkeypatch.setitem(registry.REGISTRY, attack.name, attack)
    model = _threshold_model()
    images = np.zeros((7, 1, 1, 2), "float32")
    images[:, 0, 0, 0] = 0.45
    images[6, 0, 0, 0] = 0.6  # misclassified when clean
    labels = np.zeros(7, np.int64)
    config = dataclasses.replace(suite.QUICK, attacks=tuple(a.name for a in fakes),
                                 attack_settings={}, linf_budgets=budgets, l2_budgets=())
    target = suite._ModelUnderTest("toy", model)
    clean = attacks.predict(target.fn, images) == labels
    assert clean.tolist() == [True] * 6 + [False]
    return cascade.evaluate_norm(target, [], images, labels, clean, "linf", budgets, config,
                                 {}, suite._Progress(False))


def test_columns_are_separate_cascades(monkeypatch):
    calls = {}
    fakes = [
        # Listed out of cascade order on purpose: the registry orders them.
        _fake("fake_black_box", "black_box", {(3, 0.2)}, calls),
        _fake("fake_bpda", "bpda", {(2, 0.1)}, calls),           # weaker at 0.2
        _fake("fake_grad_a", "gradient", {(0, 0.1)}, calls),     # weaker at 0.2
        _fake("fake_grad_b", "gradient", {(1, 0.1), (1, 0.2)}, calls),
        _fake("apgd_ce", "autoattack", {(4, 0.2)}, calls,
              columns=("paper_protocol", "autoattack")),
    ]
    records, smallest = _run(monkeypatch, fakes)
    small, large = records
    n = 7
    # Per-image minimum over attacks: each gradient attack alone leaves 5/7,
    # together 4/7.
    assert small["columns"]["gradient_only"] == pytest.approx(4 / n)
    assert small["columns"]["plain_gradients"] == pytest.approx(4 / n)
    assert small["columns"]["white_box"] == pytest.approx(3 / n)
    assert small["columns"]["worst_case"] == pytest.approx(3 / n)
    assert small["columns"]["paper_protocol"] == pytest.approx(6 / n)
    # At 0.2: image 0 stays broken in gradient_only (its own attack broke
    # it at 0.1: carried over); image 2, broken only by BPDA at 0.1, is
    # carried into white_box and worst_case but NOT into gradient_only.
    assert large["columns"]["gradient_only"] == pytest.approx(4 / n)
    assert large["accuracy_after_gradient"] == large["columns"]["gradient_only"]
    assert large["columns"]["plain_gradients"] == pytest.approx(3 / n)
    assert large["columns"]["white_box"] == pytest.approx(2 / n)
    assert large["columns"]["worst_case"] == pytest.approx(1 / n)
    assert large["robust_accuracy"] == pytest.approx(1 / n)
    assert large["accuracy_after_black_box"] == pytest.approx(1 / n)
    assert large["columns"]["paper_protocol"] == pytest.approx(5 / n)
    assert large["paper_protocol_overstates"] == pytest.approx(4 / n)
    assert large["carried_over"] == 3  # images 0, 1, 2 (all attacks)
    # Each attack ran in cascade order on the union of the standing images
    # of its columns only.
    order = [s["attack"] for s in large["stages"]]
    assert order == ["fake_grad_a", "fake_grad_b", "apgd_ce", "fake_bpda", "fake_black_box"]
    assert calls["fake_grad_a"] == [(0.1, [0, 1, 2, 3, 4, 5]), (0.2, [2, 3, 4, 5])]
    assert calls["fake_grad_b"] == [(0.1, [1, 2, 3, 4, 5]), (0.2, [2, 3, 4, 5])]
    # APGD: the paper column still has images 0-5 standing at 0.2.
    assert calls["apgd_ce"] == [(0.1, [0, 1, 2, 3, 4, 5]), (0.2, [0, 1, 2, 3, 4, 5])]
    assert calls["fake_bpda"] == [(0.1, [2, 3, 4, 5]), (0.2, [3, 5])]
    assert calls["fake_black_box"] == [(0.1, [3, 4, 5]), (0.2, [3, 5])]
    stage = {s["attack"]: s for s in large["stages"]}
    assert stage["fake_black_box"]["fooled"] == 1
    assert stage["fake_black_box"]["fooled_new_worst_case"] == 1
    assert stage["apgd_ce"]["fooled"] == 1 and stage["apgd_ce"]["fooled_new_worst_case"] == 1
    first = {s["attack"]: s for s in small["stages"]}
    # BPDA broke image 2 at 0.1, already broken in no other column.
    assert first["fake_bpda"]["fooled"] == 1 and first["fake_grad_b"]["attacked"] == 5
    np.testing.assert_array_equal(smallest, [0.1, 0.1, 0.1, 0.2, 0.2, np.nan, 0.0])


def test_gradient_only_column_is_unaffected_by_bpda(monkeypatch):
    base = [_fake("fake_grad", "gradient", {(0, 0.1), (0, 0.2), (1, 0.2)}, {})]
    without, _ = _run(monkeypatch, base)
    strong_bpda = _fake("fake_bpda", "bpda",
                        {(i, e) for i in range(6) for e in (0.1, 0.2)}, {})
    with_bpda, _ = _run(monkeypatch, base + [strong_bpda])
    for a, b in zip(without, with_bpda):
        assert a["columns"]["gradient_only"] == b["columns"]["gradient_only"]
        assert b["columns"]["worst_case"] == 0.0
    assert [r["columns"]["gradient_only"] for r in with_bpda] == pytest.approx([5 / 7, 4 / 7])


def test_a_claim_without_a_misclassification_does_not_count(monkeypatch):
    # Moves pixel 0 by eps only for (image 0, 0.2); everything else unmoved.
    fake = _fake("fake_grad", "gradient", {(0, 0.2)}, {})
    records, _ = _run(monkeypatch, [fake], budgets=(0.01, 0.2))
    assert records[0]["robust_accuracy"] == pytest.approx(6 / 7)  # 0.45 + 0.01 < 0.5
    assert records[1]["robust_accuracy"] == pytest.approx(5 / 7)
    assert records[0]["columns"]["paper_protocol"] is None


def test_an_attack_leaving_its_budget_raises(monkeypatch):
    cheat = _fake("fake_grad", "gradient", {(0, 0.1)}, {}, honest=False)
    with pytest.raises(ValueError, match="expected a linf distance <= 0.1"):
        _run(monkeypatch, [cheat])


def test_registry_rejects_bad_entries():
    craft = lambda s: s.images  # noqa: E731
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.Attack("fgsm", "gradient", ("linf",), None, craft))
    with pytest.raises(ValueError, match="Invalid attack kind"):
        registry.register(registry.Attack("x1", "magic", ("linf",), None, craft))
    with pytest.raises(ValueError, match="Invalid attack norms"):
        registry.register(registry.Attack("x2", "gradient", ("l7",), None, craft))
    with pytest.raises(ValueError, match="Unknown attack"):
        dataclasses.replace(suite.QUICK, attacks=("warp_drive",))


def _more_steps_check(monkeypatch, broken_by_steps):
    """The `more_steps` check on 20 images, where the suite's worst case
    left images 10-19 standing at Linf 0.1 (50%), with a fake PGD that
    breaks the first `broken_by_steps[steps]` images (any budget)."""
    def fake_pgd(model_fn, x, y, eps, norm="linf", steps=10, loss="ce", batch_size=256,
                 **kwargs):
        out = x.copy()
        out[:broken_by_steps.get(steps, len(x)), 0, 0, 0] += eps
        return out

    monkeypatch.setattr(attacks, "pgd", fake_pgd)
    images = np.zeros((20, 1, 1, 2), "float32")
    images[:, 0, 0, 0] = 0.45
    labels = np.zeros(20, np.int64)
    columns = {"plain_gradients": 0.5, "white_box": 0.5, "worst_case": 0.5}
    records = [{"norm": "linf", "budget": b, "robust_accuracy": a, "columns": columns,
                "stages": []} for b, a in ((0.05, 0.9), (0.1, 0.5), (0.2, 0.0))]
    smallest = np.array([0.1] * 10 + [0.2] * 10)
    config = dataclasses.replace(suite.QUICK, check_images=20, check_steps=(5, 20),
                                 attacks=("pgd_ce",))
    target = suite._ModelUnderTest("toy", _threshold_model())
    check = checks.sanity_checks(target, images, labels, records, config, 0,
                                 smallest)["more_steps"]
    assert check["budget"] == 0.1 and check["tolerance"] == pytest.approx(0.05)
    return check


def test_more_steps_passes_when_more_steps_change_nothing(monkeypatch):
    check = _more_steps_check(monkeypatch, {5: 10, 20: 10})
    assert check["passed"] and check["missed_by_suite"] == 0.0


def test_more_steps_fails_when_more_steps_raise_accuracy(monkeypatch):
    # A masked attack: 20 steps break fewer images than 5.
    check = _more_steps_check(monkeypatch, {5: 10, 20: 5})
    assert not check["passed"] and check["accuracy"] == pytest.approx([0.5, 0.75])


def test_more_steps_fails_when_the_suite_is_not_converged(monkeypatch):
    # An attack that keeps getting stronger: 20 steps break 3 of the
    # images the whole suite left standing (15%, above the 5% tolerance).
    check = _more_steps_check(monkeypatch, {5: 10, 20: 13})
    assert not check["passed"] and check["missed_by_suite"] == pytest.approx(0.15)
    # One image (5%, the tolerance: one image of 20) passes.
    assert _more_steps_check(monkeypatch, {5: 10, 20: 11})["passed"]
