"""Robustness suite: budgets, attacks, BPDA, gradient masking, CLI.

Tiny CNNs trained for a few seconds on real Fashion-MNIST images.
"""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_hebb import _native, architectures, data
from keras_hebb.robustness import attacks, bpda, cw, spsa, suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@keras.saving.register_keras_serializable(package="keras_hebb_tests")
class InputQuantization(keras.layers.Layer):
    """Rounds pixels to `levels` values: a hard step that masks gradients.

    Its true gradient is zero everywhere (plain gradient attacks stall);
    it declares the identity as its BPDA surrogate (straight-through).
    """

    def __init__(self, levels=8, **kwargs):
        super().__init__(**kwargs)
        self.levels = levels

    def call(self, x):
        steps = float(self.levels - 1)
        quantized = ops.round(x * steps) / steps
        return bpda.with_surrogate(quantized, x)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


@pytest.fixture(scope="module")
def fashion():
    train = data.load_arrays("fashion_mnist", "train", 3000)
    test = data.load_arrays("fashion_mnist", "test", 200)
    return train, test


@pytest.fixture(scope="module")
def standard_model(fashion, small_cnn):
    (x, y), _ = fashion
    model = small_cnn()
    model.fit(x, y, batch_size=100, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def masked_model(fashion, small_cnn):
    (x, y), _ = fashion
    model = small_cnn(1, before=lambda x: InputQuantization(16)(x))
    model.fit(x, y, batch_size=100, epochs=3, verbose=0)
    return model


def _correct(model_fn, x, y):
    return attacks.predict(model_fn, x) == y


def test_surrogate_scope_keeps_forward_and_changes_only_backward():
    # Both HaH block kinds: fractional threshold and adaptive threshold.
    model = architectures.build_vgg((8, "M", 8), 1, input_shape=(28, 28, 1))
    x = tf.random.uniform((3, 28, 28, 1), seed=1)
    plain = attacks.make_model_fn(model)
    smooth = attacks.make_model_fn(model, surrogate="smooth")
    identity = attacks.make_model_fn(model, surrogate="identity")
    y = tf.constant([0, 1, 2], tf.int64)
    reference = plain(x).numpy()
    for fn in (smooth, identity):
        np.testing.assert_array_equal(fn(x).numpy(), reference)
    g_plain = attacks.input_gradients(plain, x.numpy(), y.numpy())
    g_smooth = attacks.input_gradients(smooth, x.numpy(), y.numpy())
    assert np.all(np.isfinite(g_smooth)) and np.abs(g_smooth).max() > 0
    assert not np.allclose(g_plain, g_smooth)
    # Outside a scope the layers' gradients are the default ones again.
    np.testing.assert_allclose(
        attacks.input_gradients(attacks.make_model_fn(model), x.numpy(), y.numpy()),
        g_plain, rtol=1e-5, atol=1e-7)
    assert bpda.has_surrogates(model, (28, 28, 1))
    adaptive = architectures.build_vgg((4,), 1, input_shape=(8, 8, 1),
                                       block_options={"threshold": "adaptive"})
    with bpda.surrogate_gradients() as scope:
        adaptive(np.ones((1, 8, 8, 1), "float32"))
    assert scope.uses == 2  # the adaptive threshold and the normalization's max
    assert not bpda.has_surrogates(architectures.build_vgg((4,), 0, input_shape=(8, 8, 1)),
                                   (8, 8, 1))
    with pytest.raises(ValueError, match="mode"):
        attacks.make_model_fn(model, surrogate="bogus")


def test_attack_function_has_model_values_with_fast_thresholds(fashion):
    # Attacks trace the model with the linear-time selection (the native op
    # where built, else NthElement); the logits must be exactly the model's
    # own (top_k) inference values.
    model = architectures.hah_vgg_small(input_shape=(28, 28, 1), num_classes=10)
    x = fashion[1][0][:16]
    fn = attacks.make_model_fn(model)
    ops_used = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    selection = "KerasHebbKthLargest" if _native.library() else "NthElement"
    assert selection in ops_used and "TopKV2" not in ops_used
    # Against the same model traced without the scope (graph vs eager
    # differs by float rounding on its own).
    reference = tf.function(lambda v: model(v, training=False),
                            input_signature=[tf.TensorSpec((None, 28, 28, 1))])
    ops_used = {op.type for op in reference.get_concrete_function().graph.get_operations()}
    assert "TopKV2" in ops_used and not {"NthElement", "KerasHebbKthLargest"} & ops_used
    np.testing.assert_array_equal(fn(x).numpy(), reference(x).numpy())
    bpda_fn = attacks.make_model_fn(model, surrogate="smooth")
    np.testing.assert_array_equal(bpda_fn(x).numpy(), reference(x).numpy())


def test_every_attack_stays_in_budget_and_in_unit_box(standard_model, masked_model, fashion):
    _, (x, y) = fashion
    x, y = x[:16], y[:16]
    fn = attacks.make_model_fn(standard_model)
    bpda_fn = attacks.make_model_fn(masked_model, surrogate="identity")
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        produced = {
            "fgsm": attacks.fgsm(fn, x, y, eps, norm),
            "pgd_ce": attacks.pgd(fn, x, y, eps, norm, steps=3),
            "pgd_margin": attacks.pgd(fn, x, y, eps, norm, steps=3, loss="margin"),
            "mim": attacks.mim(fn, x, y, eps, norm, steps=3),
            "bpda": attacks.pgd(bpda_fn, x, y, eps, norm, steps=3, loss="margin"),
        }
        if norm == "linf":
            produced["spsa"] = spsa.spsa(fn, x[:2], y[:2], eps, steps=2, samples=8)
        else:
            minimal = cw.carlini_wagner_l2(fn, x[:4], y[:4], 10, steps=5,
                                           binary_search_steps=1)
            assert minimal.min() >= 0 and minimal.max() <= 1
            produced["cw_l2"] = attacks.project(x[:4], minimal, norm, eps)
        for name, adversarial in produced.items():
            n = len(adversarial)
            attacks.check_budget(x[:n], adversarial, norm, eps)
            distance = attacks.distances(x[:n], adversarial, norm)
            assert distance.max() <= eps + 1e-5, name
            assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0, name
        # The attacks really move the images (not a no-op passing trivially).
        assert attacks.distances(x, produced["pgd_ce"], norm).max() > 0.5 * eps
    # check_budget catches a violation.
    with pytest.raises(ValueError, match="budget"):
        attacks.check_budget(x, np.clip(x + 0.1, 0, 1), "linf", 0.05)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.check_budget(x, x + 0.01, "linf", 0.05)


def test_pgd_drives_undefended_model_to_zero(standard_model, fashion):
    _, (x, y) = fashion
    fn = attacks.make_model_fn(standard_model)
    assert _correct(fn, x, y).mean() > 0.7
    tf.random.set_seed(0)
    adversarial = attacks.pgd(fn, x, y, 0.3, "linf", steps=10, loss="margin")
    assert _correct(fn, adversarial, y).mean() <= 0.02
    adversarial = attacks.pgd(fn, x, y, 4.0, "l2", steps=10, loss="ce")
    assert _correct(fn, adversarial, y).mean() <= 0.05


def test_cw_l2_shim_finds_small_adversarial_examples(standard_model, fashion):
    _, (x, y) = fashion
    fn = attacks.make_model_fn(standard_model)
    keep = _correct(fn, x, y)
    x, y = x[keep][:12], y[keep][:12]
    adversarial = cw.carlini_wagner_l2(fn, x, y, 10, steps=40, binary_search_steps=3,
                                       learning_rate=0.05, batch_size=8)
    fooled = ~_correct(fn, adversarial, y)
    assert fooled.mean() >= 0.75
    distance = attacks.distances(x[fooled], adversarial[fooled], "l2")
    # Minimal-distortion: far smaller than the distance to a gray image.
    assert np.median(distance) < 2.0
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_spsa_shim_breaks_model_without_gradients(standard_model, fashion):
    from cleverhans.tf2.attacks.spsa import spsa as cleverhans_spsa

    _, (x, y) = fashion
    fn = attacks.make_model_fn(standard_model)
    keep = _correct(fn, x, y)
    x, y = x[keep][:4], y[keep][:4]
    # Unshimmed cleverhans builds Adam(lr=...), which Keras 3 rejects.
    with pytest.raises(ValueError, match="lr"):
        cleverhans_spsa(fn, tf.constant(x[:1]), tf.constant(y[:1]), 0.1, 1,
                        clip_min=0.0, clip_max=1.0, spsa_samples=8)
    tf.random.set_seed(0)
    adversarial = spsa.spsa(fn, x, y, 0.2, steps=30, samples=64, learning_rate=0.03)
    attacks.check_budget(x, adversarial, "linf", 0.2)
    assert (~_correct(fn, adversarial, y)).sum() >= 2


def test_gradient_masked_model_is_not_mistaken_for_robust(masked_model, fashion):
    _, (x, y) = fashion
    x, y = x[:120], y[:120]
    fn = attacks.make_model_fn(masked_model)
    clean = _correct(fn, x, y).mean()
    assert clean > 0.6
    # Plain PGD is fooled by the zero gradients: the model "looks" robust.
    tf.random.set_seed(0)
    plain = _correct(fn, attacks.pgd(fn, x, y, 0.2, "linf", steps=10, loss="margin"), y)
    assert plain.mean() > 0.6 * clean
    config = dataclasses.replace(
        suite.QUICK, linf_budgets=(0.2,), l2_budgets=(), noise_sigmas=(0.1,),
        noise_draws=1, attacks=("fgsm", "pgd_ce", "pgd_margin", "bpda"),
        check_images=60, check_steps=(3, 6)).with_settings(bpda={"modes": ("identity",)})
    results = suite.run_suite({"masked": masked_model}, x, y, config, seed=0, progress=False)
    entry = results["models"]["masked"]
    record = entry["attacks"]["linf"][0]
    assert record["accuracy_after_gradient"] > 0.6 * clean
    # The suite's worst case is not fooled: BPDA breaks the model.
    assert record["robust_accuracy"] <= 0.1
    checks = entry["checks"]
    assert not checks["gradients"]["passed"]
    assert checks["gradients"]["details"]["plain"]["zero_gradient_fraction"] == 1.0
    assert not checks["bpda_adds_little"]["passed"]
    assert not entry["checks_passed"]


def test_suite_on_undefended_model_passes_checks(standard_model, fashion):
    _, (x, y) = fashion
    x, y = x[:100], y[:100]
    config = dataclasses.replace(
        suite.QUICK, linf_budgets=(0.05, 0.3), l2_budgets=(0.5, 4.0),
        noise_sigmas=(0.1, 0.3), noise_draws=1, check_images=50,
        check_steps=(3, 10)).with_settings(
            pgd_ce={"steps": 5}, pgd_margin={"steps": 5}, bpda={"steps": 5},
            spsa={"images": 2, "steps": 3})
    results = suite.run_suite({"std": standard_model, "other": standard_model}, x, y,
                              config, seed=0, progress=False, evaluate=["std"],
                              transfer_sources={"std": ["other"]})
    entry = results["models"]["std"]
    assert list(results["models"]) == ["std"]
    linf = entry["attacks"]["linf"]
    assert linf[0]["robust_accuracy"] >= linf[1]["robust_accuracy"]
    assert linf[-1]["robust_accuracy"] <= 0.05
    for record in linf + entry["attacks"]["l2"]:
        assert record["robust_accuracy"] <= entry["clean_accuracy"]
        assert record["robust_accuracy"] == record["stages"][-1]["accuracy_after"]
        assert {"attack", "attacked", "fooled", "steps"} <= set(record["stages"][0])
    stages = {s["stage"] for s in linf[0]["stages"]}
    assert "transfer_from_other" in stages and "spsa" in stages
    assert not any(s.startswith("bpda") for s in stages)  # no surrogate layers
    assert entry["checks"]["large_budget"]["passed"]
    assert entry["checks"]["more_steps"]["passed"]
    assert entry["checks"]["gradients"]["passed"]
    sigmas = [n["accuracy"] for n in entry["noise"]]
    assert sigmas[0] >= sigmas[1]
    budgets = entry["smallest_breaking_budget"]["linf"]
    assert len(budgets) == len(x)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, standard_model, masked_model):
    directory = tmp_path_factory.mktemp("models")
    paths = []
    for name, model in (("std", standard_model), ("masked", masked_model)):
        path = str(directory / f"{name}.keras")
        model.save(path)
        paths.append(path)
    return paths


def test_evaluate_program_writes_report(saved_models, tmp_path):
    from training import evaluate

    out = tmp_path / "report"
    status = evaluate.main([
        "--model", *saved_models, "--dataset", "fashion_mnist", "--images", "40",
        "--suite", "quick", "--out", str(out), "--linf-budgets", "0.05,0.2",
        "--l2-budgets", "1", "--noise-sigmas", "0.1,0.3",
        "--attacks", "fgsm,pgd_margin,bpda,transfer", "--no-progress",
    ])
    assert status == 0
    names = sorted(os.listdir(out))
    for expected in ("report.json", "report.md", "noise.png", "robust_linf.png",
                     "robust_l2.png", "sparsity.png", "filters_std.png", "filters_masked.png"):
        assert expected in names
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["images"] == 40 and report["settings"]["seed"] == 0
    assert set(report["models"]) == {"std", "masked"}
    masked = report["models"]["masked"]
    assert masked["surrogate_gradients"] and masked["transfer_sources"] == ["std"]
    assert not masked["checks_passed"]
    assert report["models"]["std"]["sparsity"][0]["nonzero_fraction"] > 0
    text = (out / "report.md").read_text()
    assert "| std |" in text and "FAIL" in text


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model.keras"], "model file not found"),
    (["--model", "NOTAMODEL"], "could not load a Keras model"),
    (["--model", "STD", "--attacks", "pgd,warp_drive"], "unknown attack"),
    (["--model", "STD", "--linf-budgets", "0.1,-0.2"], "must be numbers >= 0"),
    (["--model", "HAH32"], "expects (32, 32, 3)"),
    (["--model", "STD", "--suite", "huge"], "invalid choice"),
    (["--model", "STD", "--dataset", "imagenet_22k"], "could not load dataset"),
])
def test_bad_input_gives_one_line_and_status_2(args, message, saved_models, tmp_path, capsys):
    from training import evaluate

    not_a_model = tmp_path / "junk.keras"
    not_a_model.write_text("this is not a zip archive")
    hah32 = tmp_path / "hah32.keras"
    if "HAH32" in args:
        architectures.build_vgg((8, "M"), 1, input_shape=(32, 32, 3)).save(str(hah32))
    replace = {"NOTAMODEL": str(not_a_model), "STD": saved_models[0], "HAH32": str(hah32)}
    args = [replace.get(a, a) for a in args] + ["--out", str(tmp_path / "o"), "--no-progress"]
    assert evaluate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_program_runs_as_module_and_reports_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--model", str(tmp_path / "none.keras"),
         "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if "model file not found" in l]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    # An argument mistake: one line that points to --help, no usage dump.
    result = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--model", "m.keras", "--suite", "nope"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "--suite" in errors[0]
    assert "python -m training evaluate --help" in errors[0] and "usage:" not in result.stderr


def _evaluate_std(saved_models, out, seed=0):
    from training import evaluate

    return evaluate.main([
        "--model", saved_models[0], "--dataset", "fashion_mnist", "--images", "40",
        "--suite", "quick", "--out", str(out), "--linf-budgets", "0.05,0.2",
        "--l2-budgets", "1", "--noise-sigmas", "0.1", "--attacks", "fgsm,pgd_margin",
        "--no-progress", "--seed", str(seed)])


def test_interrupted_evaluation_continues_from_its_finished_norms(
        saved_models, tmp_path, monkeypatch):
    from training import evaluate

    attacked = []
    original = suite.evaluate_norm

    def interrupted_in_l2(target, sources, images, labels, clean_correct, norm, *args,
                          **kwargs):
        attacked.append(norm)
        if norm == "l2":
            raise KeyboardInterrupt  # the session stops while attacking in L2
        return original(target, sources, images, labels, clean_correct, norm, *args,
                        **kwargs)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(suite, "evaluate_norm", interrupted_in_l2)
    with pytest.raises(KeyboardInterrupt):
        _evaluate_std(saved_models, out)
    assert attacked == ["linf", "l2"]
    partial = out / evaluate.PARTIAL_FOLDER
    assert sorted(os.listdir(partial)) == ["std.linf.json"]
    assert not (out / "report.json").exists()

    # The same command again attacks only L2, then writes the report.
    attacked.clear()
    def recorded(target, sources, images, labels, clean_correct, norm, *args, **kwargs):
        attacked.append(norm)
        return original(target, sources, images, labels, clean_correct, norm, *args,
                        **kwargs)

    monkeypatch.setattr(suite, "evaluate_norm", recorded)
    assert _evaluate_std(saved_models, out) == 0
    assert attacked == ["l2"]
    assert not partial.exists()  # the report holds it now
    resumed = json.loads((out / "report.json").read_text())["models"]["std"]

    whole = tmp_path / "whole"
    attacked.clear()
    assert _evaluate_std(saved_models, whole) == 0
    assert attacked == ["linf", "l2"]
    reference = json.loads((whole / "report.json").read_text())["models"]["std"]
    for norm in ("linf", "l2"):
        assert ([r["robust_accuracy"] for r in resumed["attacks"][norm]]
                == [r["robust_accuracy"] for r in reference["attacks"][norm]])
        assert (resumed["smallest_breaking_budget"][norm]
                == reference["smallest_breaking_budget"][norm])
    assert ({k: c["passed"] for k, c in resumed["checks"].items()}
            == {k: c["passed"] for k, c in reference["checks"].items()})


def test_saved_norm_is_not_read_for_other_settings(tmp_path):
    from keras_hebb.robustness import resume

    smallest = np.array([0.05, np.nan, 0.0])
    resume.save(str(tmp_path), "a/b", "linf", "key-1", [{"budget": 0.05}], smallest, 3.0)
    records, back, seconds = resume.load(str(tmp_path), "a/b", "linf", "key-1")
    assert records == [{"budget": 0.05}] and seconds == 3.0
    np.testing.assert_array_equal(back, smallest)
    assert resume.load(str(tmp_path), "a/b", "linf", "key-2") is None
    assert resume.load(str(tmp_path), "a/b", "l2", "key-1") is None
    resume.clear(str(tmp_path / "missing"))
    resume.clear(str(tmp_path))
    assert not tmp_path.exists()
