"""The defenses experiment (`make results-defenses`, `experiments.defenses`):
the runs its make target plans and the training configs they get, the
trained runs' configs and models at the tests' tiny budget, and its report
(rows, chosen comparisons, one-seed pairs, AutoAttack) from synthetic files."""

import json
import os
import shlex
import subprocess

import keras
import pytest
import yaml
from test_results_regime import _certified
from test_results_report import _write_model

from experiments import defenses, results, results_summary, results_tables
from experiments.networks import NETWORKS, config_path
from training import config as run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (2022, 2023, 2024)


def _make_target_arguments():
    """`python -m experiments results` arguments of `make results-defenses`."""
    command = subprocess.run(["make", "-s", "-n", "-o", "setup", "results-defenses"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    words = shlex.split(command.replace("\\\n", " "))
    return words[words.index("results") + 1:]


def test_make_target_plans_every_defense_run_with_its_training_config(tmp_path):
    args = results._parser().parse_args(_make_target_arguments())
    assert (args.images, args.autoattack_images, args.certify) == (500, 100, True)
    assert args.autoattack_runs == ("standard_at_s2022,recipe_at_s2022,recipe_at_alpha0_s2022,"
                                    "hah_at_s2022,hah_soft,hah_pgd_at")
    assert (args.network, args.section, args.docs) == (
        "small", "defenses", ["docs/results/defenses.md"])
    args.out = str(tmp_path)
    _, runs, _, _ = results._settings(args)
    seeded = ["standard", "hah", "hah_no_threshold", "standard_at", "recipe_at",
              "recipe_at_alpha0", "hah_at", "standard_noise_mix", "recipe_noise_mix"]
    one_seed = ["standard_pgd_at", "recipe_pgd_at", "hah_pgd_at", "hah_soft"]
    assert sorted(r.name for r in runs) == sorted(
        [f"{name}_s{seed}" for name in seeded for seed in SEEDS] + one_seed)
    for run in runs:
        config = run_config.load_config(config_path(NETWORKS["small"][run.base]),
                                        run.overrides)
        name = results_summary.family(run) or run.name
        adversarial = config["adversarial"] or {}
        if name.endswith(("_at", "_at_alpha0")):
            assert (adversarial["attack"], adversarial["eps"], adversarial["norm"],
                    adversarial["steps"]) == (("pgd", 0.1, "linf", 7) if "pgd" in name
                                              else ("fgsm_rs", 0.1, "linf", 1)), name
        else:
            assert adversarial == {}, name
        noise = (0.25, 0.5) if name.endswith("noise_mix") else (0.0, 1.0)
        assert (config["noise_sigma"], config["noise_fraction"]) == noise, name
        if run.base == "hah":  # the acting alphas of --hah-set, the block options
            assert config["hah_alphas"] == (
                0.0 if name.endswith("alpha0") else [0.135, 0.075]), name
            expected = ({"threshold": None} if name.startswith(("recipe", "hah_no_threshold"))
                        else {"threshold_mode": "soft"} if name == "hah_soft" else {})
            assert config["block_options"] == expected, name
        else:
            assert config["architecture"] == "vgg_small_bn", name
        if name not in ("standard", "hah"):
            assert run.transfer_source == f"standard_s{run.seed}", name
    # The recipe-AT twin without the cost.
    base, overrides, _ = results.ABLATIONS["recipe_at_alpha0"]
    twin = run_config.load_config(config_path(NETWORKS["small"][base]),
                                  ["hah_alphas=[0.135,0.075]", *overrides])
    assert twin["hah_alphas"] == 0.0 and twin["block_options"] == {"threshold": None}
    assert twin["adversarial"]["attack"] == "fgsm_rs"
    # make results keeps its runs: the defenses are chosen by name only.
    assert not set(results._parser().parse_args([]).ablations.split(",")) & set(
        defenses.DEFENSES)


def test_trained_runs_carry_their_defense(tmp_path):
    runs = {r.name: r for r in results.plan(
        [1], ["hah_soft", "standard_noise_mix"], seeded=["recipe_at"],
        hah_overrides=["hah_alphas=[0.135,0.075]"])}
    # Their transfer source, standard_s1, without its own (one model fewer).
    chosen = [runs["standard_s1"]._replace(transfer_source="standard_s1")] + [
        runs[name] for name in ("recipe_at_s1", "standard_noise_mix", "hah_soft")]
    trained = []
    results.run_all(str(tmp_path), chosen, results.BUDGETS["tiny"], 8,
                    lambda step, seconds: trained.append(step), train_only=True)
    # Each run, and their transfer source, trained once; nothing evaluated.
    assert sorted(trained) == ["train hah_soft", "train recipe_at_s1",
                               "train standard_noise_mix", "train standard_s1"]

    def config(name):
        return yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())

    recipe = config("recipe_at_s1")
    assert recipe["adversarial"]["attack"] == "fgsm_rs" and recipe["adversarial"]["eps"] == 0.1
    assert recipe["block_options"] == {"threshold": None}
    assert recipe["hah_alphas"] == [0.135, 0.075] and recipe["epochs"] == 1
    noise = config("standard_noise_mix")
    assert (noise["noise_sigma"], noise["noise_fraction"], noise["adversarial"]) == (
        0.25, 0.5, None)
    assert config("hah_soft")["block_options"] == {"threshold_mode": "soft"}
    # The saved models train and act as configured.
    model = keras.models.load_model(tmp_path / "runs" / "recipe_at_s1" / "model.keras")
    assert model.adversarial["attack"] == "fgsm_rs" and model.adversarial["eps"] == 0.1
    soft = keras.models.load_model(tmp_path / "runs" / "hah_soft" / "model.keras")
    modes = [layer.threshold_mode for layer in soft.layers if hasattr(layer, "threshold_mode")]
    assert modes and set(modes) == {"soft"}


def _autoattack(out, name, suite, strong):
    """Per-image smallest breaking L-inf budgets of the suite (added to the
    run's report) and of AutoAttack at standard strength (its own report)."""
    path = out / "eval" / name / "report.json"
    report = json.loads(path.read_text())
    report["models"][name]["smallest_breaking_budget"] = {"linf": suite}
    path.write_text(json.dumps(report))
    folder = out / "eval_autoattack" / name
    folder.mkdir(parents=True)
    folder.joinpath("report.json").write_text(json.dumps({"models": {name: {
        "smallest_breaking_budget": {"linf": strong},
        "attacks": {"linf": [{"budget": 0.02}]}}}}))


@pytest.fixture(scope="module")
def defenses_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("defenses")
    # Worst case at L-inf 0.02 (seeds 1, 2; a one-seed run: seed 1).
    worst = {"standard": (0.50, 0.40), "hah": (0.30, 0.20), "hah_no_threshold": (0.60, 0.50),
             "standard_at": (0.70, 0.66), "recipe_at": (0.80, 0.70),
             "recipe_at_alpha0": (0.75, 0.70), "standard_noise_mix": (0.55, 0.45),
             "recipe_noise_mix": (0.65, 0.45), "hah_soft": (0.52,),
             "standard_pgd_at": (0.74,)}
    # Certified at r = 0.25 (sigma 0.25): the noise-trained networks.
    certified = {"standard_noise_mix": (0.6, 0.5), "recipe_noise_mix": (0.7, 0.8)}
    for name, values in worst.items():
        for seed, value in zip((1, 2), values):
            run = f"{name}_s{seed}" if len(values) > 1 else name
            _write_model(out, run, value, value + 0.05)
            _certified(out, run, *((certified[name][seed - 1], 0.3) if name in certified
                                   else (0.4, 0.2)))
    # The one-seed hah_soft at L-inf 0.02: 3 of 4 images stand to the suite,
    # 2 to AutoAttack, 1 to both.
    _autoattack(out, "hah_soft", [0.01, None, None, 0.05], [None, None, 0.01, 0.01])
    seeded = [n for n, v in worst.items() if len(v) > 1 and n not in ("standard", "hah")]
    runs = results.plan([1, 2], ["hah_soft", "standard_pgd_at"], seeded=seeded)
    summary = results_summary.collect(str(out), runs, results.PAIRS)
    path = results_tables.write(str(out), summary, {}, results.GOALS, command="test")
    return summary, open(path).read()


def test_report_has_a_row_per_defense_and_the_chosen_comparisons(defenses_report):
    summary, text = defenses_report
    main = text.split("## Standard vs HaH")[1].split("###")[0]
    for name in ("standard_at", "recipe_at", "recipe_at_alpha0", "standard_noise_mix",
                 "recipe_noise_mix"):
        assert f"| {name} | 1, 2 |" in main, name
    comparisons = summary["comparisons"]
    # recipe_at - standard_at: +10 and +4 points; seeded pairs only where both ran.
    linf = comparisons["recipe_at - standard_at"]["measures"]["L∞ 0.02"]
    assert linf["values"] == pytest.approx([0.10, 0.04])
    assert comparisons["recipe_noise_mix - standard_noise_mix"]["seeds"] == [1, 2]
    assert "hah_at - standard_at" not in comparisons  # hah_at did not run
    # The recipe against standard, seed by seed: 60 - 50 and 50 - 40.
    recipe = comparisons["hah_no_threshold - standard"]
    assert recipe["measures"]["L∞ 0.02"]["values"] == pytest.approx([0.10, 0.10])
    # One-seed runs pair with their seed: hah_soft - recipe = 52 - 60.
    soft = comparisons["hah_soft - hah_no_threshold"]
    assert soft["seeds"] == [1] and soft["pair"] == ["hah_soft", "hah_no_threshold"]
    assert soft["measures"]["L∞ 0.02"]["mean"] == pytest.approx(-0.08)
    section = text.split("## What HaH adds, seed by seed")[1].split("\n## ")[0]
    # HaH minus the undefended networks only; the defended ones are compared above.
    assert set(summary["paired"]) == {"standard", "hah_no_threshold"}
    assert "| standard_at | 1, 2 |" not in section
    assert "| recipe_at - standard_at | 1, 2 | " in section and "+7.0 ± 4.2" in section
    assert "| hah_soft - hah_no_threshold § | 1 | " in section and "-8.0" in section
    assert "| standard_pgd_at - standard_at § | 1 | " in section
    # What the cost adds on top of AT: the recipe-AT twin (+5 and 0 points).
    assert "| recipe_at - recipe_at_alpha0 | 1, 2 | " in section and "+2.5 ± 3.5" in section
    assert "- `recipe_at`: robust recipe (HaH without the threshold), adversarially" in section


def test_report_pairs_certificates_per_sigma_and_runs_autoattack_on_one_seed_runs(
        defenses_report):
    _, text = defenses_report
    fixed = text.split("### Certified accuracy at each fixed σ")[1].split("\n## ")[0]
    # Certified at r = 0.25, sigma 0.25: +10 and +30 points.
    assert "| recipe_noise_mix - standard_noise_mix | 0.25 | 1, 2 | +20.0 ± 14.1 |" in fixed
    assert "| hah_soft | 0.25 | 90.0 | 40.0 | 20.0 |" in text
    strong = text.split("## AutoAttack at its standard strength")[1].split("\n## ")[0]
    assert "| hah_soft | 1 | AutoAttack (standard) | 50.0 |" in strong
    assert "| hah_soft | 1 | suite, same images | 75.0 |" in strong
    assert "| hah_soft | 1 | worst of both | 25.0 |" in strong
    masking = text.split("## Gradient masking check")[1]
    assert "| standard_at_s1 | linf 0.02 | 80.0 | 70.0 |" in masking
