"""An attack is one registry entry: a toy attack registered at run time runs
through `python -m training evaluate` and shows in the columns, the caps
line and report.json; AutoAttack's standard strength as a suite option."""

import json
import os

import keras
import numpy as np
import pytest

from keras_hebb import data
from keras_hebb.robustness import attacks, registry, report, suite
from training import evaluate


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small dense Fashion-MNIST classifier (about 75% clean), saved."""
    x, y = data.load_arrays("fashion_mnist", "train", 2000)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.asarray(x, "float32"), y, batch_size=100, epochs=2, verbose=0)
    path = str(tmp_path_factory.mktemp("model") / "dense.keras")
    model.save(path)
    return path


def _toy_craft(s):
    # Moves every standing image by the whole budget against its gradient
    # sign (FGSM in a costume), so it breaks some and stays in budget.
    return attacks.fgsm(s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.batch_size)


@pytest.fixture
def toy_attack():
    toy = registry.Attack(
        "toy_sign", "black_box", ("linf",),
        lambda settings, target, sources: [registry.Stage("toy_sign", "toy_sign", 0,
                                                          {"pushes": settings["pushes"]})],
        _toy_craft, description="a toy attack registered by a test",
        defaults={"pushes": 1}, presets={"quick": {"pushes": 3}},
        caps=lambda o: ("toy sign", f"{o['pushes']} pushes"))
    registry.register(toy)
    yield toy
    del registry.REGISTRY["toy_sign"]


def _evaluate(tmp_path, model_file, *options):
    out = str(tmp_path / "report")
    status = evaluate.main([
        "--model", model_file, "--images", "12", "--linf-budgets", "0.05",
        "--l2-budgets", "", "--noise-sigmas", "0.1", "--no-progress", "--out", out,
        *options])
    assert status == 0
    with open(os.path.join(out, "report.json")) as f:
        results = json.load(f)
    with open(os.path.join(out, "report.md")) as f:
        markdown = f.read()
    return results, markdown


def test_an_attack_registered_at_run_time_runs_through_evaluate(tmp_path, model_file,
                                                                 toy_attack):
    results, markdown = _evaluate(tmp_path, model_file, "--attacks", "fgsm,toy_sign")
    settings = results["settings"]
    assert settings["attacks"] == ["fgsm", "toy_sign"]
    # Its settings are its own defaults for the preset (quick).
    assert settings["attack_settings"]["toy_sign"] == {"pushes": 3}
    record = results["models"]["dense"]["attacks"]["linf"][0]
    stage = {s["attack"]: s for s in record["stages"]}["toy_sign"]
    assert stage["kind"] == "black_box" and stage["pushes"] == 3 and stage["attacked"] > 0
    # In the columns of its kind, not in the white-box ones.
    assert "toy_sign" in record["column_attacks"]["worst_case"]
    assert "toy_sign" not in record["column_attacks"]["white_box"]
    # In the caps line of the report and of the registry.
    assert "toy sign 3 pushes" in markdown
    assert report.caps(settings) == "toy sign 3 pushes"
    # A black-box attack on every standing image: the black-box check ran.
    assert results["models"]["dense"]["checks"]["black_box_not_stronger"]["status"] != \
        "not run"


def test_evaluate_refuses_an_attack_nobody_registered(tmp_path, model_file, capsys):
    status = evaluate.main(["--model", model_file, "--attacks", "fgsm,toy_sign",
                            "--out", str(tmp_path / "x")])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert "unknown attack 'toy_sign'" in error and "\n" not in error


def test_autoattack_standard_runs_at_full_strength_and_says_so(tmp_path, model_file):
    results, markdown = _evaluate(tmp_path, model_file, "--attacks", "fgsm",
                                  "--autoattack", "standard")
    settings = results["settings"]
    assert settings["attacks"] == ["fgsm", "apgd_ce", "apgd_t", "square"]
    assert settings["attack_settings"]["apgd_ce"] == {"steps": 100, "restarts": 5}
    assert settings["attack_settings"]["apgd_t"] == {"steps": 100, "restarts": 1,
                                                    "targets": 9}
    assert settings["attack_settings"]["square"]["queries"] == 5000
    assert ("APGD-CE 100 steps x 5 restart(s); APGD-T 100 steps x 1 restart(s) x 9 "
            "target classes; Square 5000 queries") in markdown
    stages = results["models"]["dense"]["attacks"]["linf"][0]["stages"]
    assert [s["restart"] for s in stages if s["attack"] == "apgd_ce"] == [0, 1, 2, 3, 4]
    assert [s["target_classes"] for s in stages if s["attack"] == "apgd_t"] == [9]
    assert [s["queries"] for s in stages if s["attack"] == "square"] == [5000]


def test_the_presets_keep_their_caps():
    quick, full = suite.QUICK.attack_settings, suite.FULL.attack_settings
    assert quick["pgd_ce"] == {"steps": 10, "restarts": 1}
    assert quick["apgd_t"] == {"steps": 10, "restarts": 1, "targets": 1}
    assert quick["square"] == {"queries": 100, "p_init": 0.8}
    assert full["pgd_margin"] == {"steps": 20, "restarts": 2}
    assert full["bpda"]["modes"] == ("smooth", "identity")
    assert full["cw_l2"] == {"steps": 50, "binary_steps": 4, "images": 400}
    assert full["spsa"] == {"steps": 20, "samples": 128, "images": 8}
    assert full["apgd_t"] == {"steps": 50, "restarts": 1, "targets": 3}
    assert full["square"]["queries"] == 500 and full["transfer"] == {"steps": 10}


def test_caps_of_a_report_written_before_attacks_owned_settings():
    legacy = {"attacks": ["pgd_ce", "pgd_margin", "mim", "apgd_ce", "apgd_t", "bpda",
                          "square", "cw_l2", "spsa"],
              "steps": 20, "restarts": 2, "mim_steps": 20, "transfer_steps": 10,
              "bpda_modes": ["smooth"], "cw_steps": 50, "cw_binary_steps": 4,
              "cw_images": 400, "spsa_steps": 20, "spsa_samples": 128, "spsa_images": 8,
              "apgd_steps": 50, "apgd_restarts": 1, "apgd_targets": 3,
              "square_queries": 500}
    assert report.caps(legacy) == (
        "PGD and BPDA 20 steps x 2 restarts; MIM 20 steps; APGD-CE 50 steps x 1 "
        "restart(s); APGD-T 50 steps x 1 restart(s) x 3 target classes; Square 500 "
        "queries; CW-L2 4 binary steps x 50 iterations on at most 400 images (the first "
        "standing ones at the smallest L2 budget); SPSA 20 steps x 128 probes on at most "
        "8 images per L∞ budget")
    assert registry.suite_summary(legacy) == legacy
    # BPDA with other settings than PGD gets its own part.
    config = suite.FULL.with_settings(bpda={"steps": 7})
    assert report.caps(config.settings()).startswith(
        "PGD 20 steps x 2 restarts; BPDA 7 steps x 2 restarts; MIM")


@pytest.mark.parametrize("change, message", [
    (dict(attacks=("warp_drive",)), "Unknown attack"),
    (dict(attack_settings={"pgd_ce": {"stepz": 3}}), "Unknown setting of attack 'pgd_ce'"),
    (dict(attack_settings={"apgd_ce": {"restarts": 0}}), "Received: restarts=0"),
    (dict(attack_settings={"bpda": {"modes": ("magic",)}}), "Received: modes=\\['magic'\\]"),
    (dict(linf_budgets=(-1.0,)), "Received: -1.0"),
])
def test_bad_suite_settings_are_one_line_value_errors(change, message):
    import dataclasses

    with pytest.raises(ValueError, match=message) as error:
        dataclasses.replace(suite.QUICK, **change)
    assert "\n" not in str(error.value)
