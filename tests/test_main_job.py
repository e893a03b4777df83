"""The main job end to end at a tiny budget: `make demo`'s pipeline and
`make results`' pipeline (train, evaluate, export, report), as programs.

Calls that train nothing (a rerun that only reports, an AutoAttack
evaluation, usage mistakes) run the program's `main` in this process: a
subprocess would spend its seconds importing TensorFlow. The programs'
start as a process is checked by the calls that train (and by one usage
mistake here; tests/test_cli.py checks the start-up notices).
"""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import __main__ as experiments_main
from experiments import results
from experiments.networks import NETWORKS
from training import config as run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _program(*arguments, timeout=900):
    result = subprocess.run(
        [sys.executable, "-m", "experiments", *arguments], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


def _in_process(capfd, *arguments, check=True):
    """`python -m experiments ARGUMENTS` as its `main` in this process:
    `(returncode, stdout, stderr)` as `subprocess.run` gives them."""
    capfd.readouterr()
    status = experiments_main.main(list(arguments))
    out, err = capfd.readouterr()
    if check:
        assert status == 0, (out[-2000:], err[-3000:])
    return SimpleNamespace(returncode=status, stdout=out, stderr=err)


#: Test images the tiny results pipeline attacks (its own default 32):
#: every check below reads the files whatever their number.
RESULTS_IMAGES = "16"


def test_demo_pipeline_writes_report_with_three_models_plots_and_export(tmp_path):
    out = tmp_path / "demo"
    _program("demo", "--tiny", "--out", str(out))
    report = (out / "report.md").read_text()
    for model in ("standard", "hah", "recipe"):
        assert (out / model / "model.keras").is_file()
        assert f"| {model} |" in report
    # The opening lines: one per network, its numbers from the run's files.
    opening = report.split("## What each network shows")[1].split("\n## ")[0]
    bullets = [line for line in opening.splitlines() if line.startswith("- **")]
    assert [line[4:].split("**")[0] for line in bullets] == ["standard", "hah", "recipe"]
    evaluation = json.loads((out / "robustness" / "report.json").read_text())
    for line, model in zip(bullets, ("standard", "hah", "recipe")):
        test = json.loads((out / model / "metrics.json").read_text())["final"]["val_accuracy"]
        assert f"test accuracy {100 * test:.1f}%" in line
        linf = {r["budget"]: r["robust_accuracy"]
                for r in evaluation["models"][model]["attacks"]["linf"]}
        assert f"L∞ 0.05 {100 * linf[0.05]:.1f}%" in line
        assert ("points)" in line) == (model != "standard")
    assert "## Export of the recipe model" in report
    for plot in ("noise.png", "robust_linf.png", "robust_l2.png", "sparsity.png"):
        assert (out / "robustness" / plot).stat().st_size > 1000
        assert f"(robustness/{plot})" in report
    version = next(p for p in (out / "export").iterdir() if p.name.isdigit())
    assert (version / "saved_model.pb").is_file()
    assert {p.name for p in (version / "tflite").glob("*.tflite")} >= {"model_float32.tflite",
                                                          "model_int8.tflite"}
    assert "int8" in report and "float32" in report


def test_every_ablation_is_a_valid_config():
    # The defenses experiment's entries: tests/test_results_defenses.py.
    for name in results.STUDY_ABLATIONS:
        base, overrides, _ = results.ABLATIONS[name]
        config = run_config.load_config(os.path.join(ROOT, NETWORKS["small"][base]),
                                        overrides)
        if name == "hah_alpha0":
            assert config["hah_alphas"] == 0.0
        elif name == "hah_no_dn":
            assert config["block_options"] == {"normalization_field": None}
        elif name == "hah_no_threshold":
            assert config["block_options"] == {"threshold": None}
        elif name == "hah_no_threshold_alpha0":
            assert config["block_options"] == {"threshold": None}
            assert config["hah_alphas"] == 0.0
        elif name == "standard_pruned90":
            assert config["prune_to"] == 0.9 and config["architecture"] == "vgg_small_bn"
        elif name == "standard_noise":
            assert config["noise_sigma"] == 0.25 and config["architecture"] == "vgg_small_bn"
        elif name == "hah_demote01":
            assert config["block_options"] == {"cost_demote": 0.1}
        else:
            assert name == "hah_torch_init" and config["weight_init"] == "torch"


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    _program("results", "--tiny", "--out", str(out), "--images", RESULTS_IMAGES,
             "--seeds", "2022,2023", "--ablations", "standard_pruned90",
             "--seeded", "hah_alpha0", "--certify")
    return out


def test_results_pipeline_reports_seeds_goals_and_ablations(tiny_results):
    summary = json.loads((tiny_results / "results.json").read_text())
    for base in ("standard", "hah"):
        group = summary["groups"][base]
        assert group["seeds"] == [2022, 2023]
        # Mean and sample standard deviation of the two seeds' own numbers.
        clean = [summary["models"][f"{base}_s{seed}"]["clean"] for seed in (2022, 2023)]
        assert group["clean"]["values"] == clean
        assert group["clean"]["mean"] == pytest.approx(np.mean(clean))
        assert group["clean"]["std"] == pytest.approx(np.std(clean, ddof=1))
        # Robust accuracy is a worst case: never above clean accuracy.
        for norm in ("linf", "l2"):
            for stats in group["robust"][norm].values():
                assert stats["mean"] <= group["clean"]["mean"] + 1e-9
    models = summary["models"]
    # Pruning really removed 90% of the weights of the pruned network.
    assert abs(models["standard_pruned90"]["weight_sparsity"] - 0.9) < 0.01
    assert "weight_sparsity" not in models["standard_s2022"]
    # Each model was attacked by a transfer attack from its counterpart.
    report = json.loads((tiny_results / "eval" / "hah_s2023" / "report.json").read_text())
    assert report["models"]["hah_s2023"]["transfer_sources"] == ["source_standard_s2023"]
    # Files are named relative to the report's folder (no machine paths).
    assert report["settings"]["model_files"] == {"hah_s2023": "../../runs/hah_s2023/model.keras"}
    assert report["settings"]["transfer_files"] == ["../../runs/standard_s2023/model.keras"]
    assert summary["hah_layers"] == ["block1_hah", "block2_hah"]
    assert summary["standard_layers"] == ["block1_relu", "block2_relu"]
    markdown = (tiny_results / "results.md").read_text()
    assert "## Goals" in markdown and "## Ablations" in markdown
    assert "hah_alpha0" in markdown and "Incomplete" not in markdown
    # The network without the HaH cost ran for every seed: a row of the main
    # table, and what HaH adds to it, paired by seed; every model certified.
    assert summary["groups"]["hah_alpha0"]["seeds"] == [2022, 2023]
    assert set(summary["paired"]) == {"standard", "hah_alpha0"}
    assert all(m["certified"] for m in models.values())
    assert "## What HaH adds, seed by seed" in markdown
    # Each step's time is kept as soon as it ends (an interrupted call keeps them).
    timings = json.loads((tiny_results / "timings.json").read_text())
    assert {"train hah_alpha0_s2023", "evaluate hah_alpha0_s2023"} <= set(timings)
    assert len(timings["calls"]) == 1
    assert "## Certified robustness (randomized smoothing)" in markdown
    for plot in ("noise.png", "robust_linf.png", "robust_l2.png", "sparsity.png",
                 "certified.png"):
        assert (tiny_results / plot).stat().st_size > 1000


def test_fixed_sigma_certified_summary_is_computed_from_the_report_files(tiny_results):
    def certified(name):
        report = json.loads((tiny_results / "eval" / name / "report.json").read_text())
        (entry,) = report["models"].values()
        return {c["sigma"]: dict(zip(c["radii"], c["certified_accuracy"]))
                for c in entry["certified"]}

    markdown = (tiny_results / "results.md").read_text()
    section = markdown.split("### Certified accuracy at each fixed σ")[1].split("\n## ")[0]
    assert "best σ" in section  # the selection of the other tables is stated
    for first, second in (("hah", "standard"), ("hah", "hah_alpha0"),
                          ("hah_alpha0", "standard")):
        differences = [100 * (certified(f"{first}_s{s}")[0.25].get(0.25, 0.0)
                              - certified(f"{second}_s{s}")[0.25].get(0.25, 0.0))
                       for s in (2022, 2023)]
        mean, sd = np.mean(differences), np.std(differences, ddof=1)
        row = next(line for line in section.splitlines()
                   if line.startswith(f"| {first} - {second} | 0.25 | 2022, 2023 |"))
        assert f"{mean:+.1f} ± {sd:.1f}" in row.split("|")[4]
    group = [100 * certified(f"hah_s{s}")[0.25].get(0.25, 0.0) for s in (2022, 2023)]
    assert (f"| hah | 0.25 | {np.mean(group):.1f} ± {np.std(group, ddof=1):.1f} |"
            in section)


def test_autoattack_at_standard_strength_runs_and_joins_the_worst_case(tiny_results, tmp_path,
                                                                       capfd):
    out = tmp_path / "results"
    shutil.copytree(tiny_results, out)
    # One seed: only the AutoAttack evaluation of hah_s2022 runs (the rest
    # exists; standard_s2022 is not among --autoattack-runs); 4 images.
    result = _in_process(capfd, "results", "--tiny", "--out", str(out), "--images",
                         RESULTS_IMAGES, "--seeds", "2022", "--ablations", "none",
                         "--autoattack-images", "4", "--autoattack-runs", "hah_s2022")
    assert "=== train" not in result.stdout and "=== evaluate" not in result.stdout
    assert "=== autoattack hah_s2022" in result.stdout
    assert not (out / "eval_autoattack" / "standard_s2022").exists()
    caps = (out / "eval_autoattack" / "hah_s2022" / "report.md").read_text()
    assert ("APGD-CE 100 steps x 5 restart(s); APGD-T 100 steps x 1 restart(s) x 9 target "
            "classes; Square 5000 queries") in caps
    markdown = (out / "results.md").read_text()
    section = markdown.split("## AutoAttack at its standard strength")[1].split("\n## ")[0]
    assert "first 4 test images" in section
    assert "| standard | 2022 |" not in section

    def smallest(folder, name, norm):
        report = json.loads((out / folder / name / "report.json").read_text())
        (entry,) = report["models"].values()
        return np.array([np.inf if v is None else v
                         for v in entry["smallest_breaking_budget"][norm]])[:4]

    aa = smallest("eval_autoattack", "hah_s2022", "linf")
    suite = smallest("eval", "hah_s2022", "linf")
    for label, values in (("AutoAttack (standard)", aa), ("suite, same images", suite),
                          ("worst of both", np.minimum(aa, suite))):
        row = next(line for line in section.splitlines()
                   if line.startswith(f"| hah | 2022 | {label} |"))
        cells = [c.strip() for c in row.split("|")[4:-1]]
        assert cells == [f"{100 * np.mean(values > b):.1f}" for b in (0.02, 0.1)]


def test_results_rerun_reuses_finished_steps_and_fills_the_docs(tiny_results, tmp_path, capfd):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Title\n\nprose before\n<!-- results:begin -->\nold\n"
                   "<!-- results:end -->\nprose after\n")
    result = _in_process(capfd, "results", "--tiny", "--out", str(tiny_results), "--images",
                         RESULTS_IMAGES, "--seeds", "2022,2023", "--ablations",
                         "standard_pruned90", "--seeded", "hah_alpha0", "--certify",
                         "--docs", str(doc))
    assert "=== train" not in result.stdout and "=== evaluate" not in result.stdout
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose before\n") and text.endswith("prose after\n")
    assert "\nold\n" not in text and "### Goals (HaH against standard)" in text
    # Plot links point from the document to the results folder.
    link = os.path.relpath(tiny_results / "noise.png", tmp_path)
    assert f"![noise.png]({link})" in text


@pytest.mark.parametrize("arguments, message", [
    (["--seeds", "a,b"], "--seeds must be integers"),
    (["--ablations", "no_such"], "unknown ablation 'no_such'"),
    (["--seeded", "hah_alpha1"], "unknown ablation 'hah_alpha1'"),
    (["--hah-set", "alphas=[1]"], "--hah-set: Unknown config key 'alphas'"),
    (["--seeds", "2022", "--autoattack-runs", "hah_s2023"],
     "--autoattack-runs: 'hah_s2023' is not a run of this experiment"),
])
def test_results_usage_mistakes_give_one_line(arguments, message, tmp_path, one_line_error,
                                              capfd):
    result = _in_process(capfd, "results", "--out", str(tmp_path), *arguments, check=False)
    assert one_line_error(result, message).startswith("error: ")


def test_a_results_usage_mistake_found_after_tensorflow_starts_is_one_line_as_a_program(
        tmp_path, one_line_error):
    # The mistake found last (its runs planned, TensorFlow imported).
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "results", "--out", str(tmp_path),
         "--seeds", "2022", "--autoattack-runs", "hah_s2023"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert one_line_error(result, "--autoattack-runs: 'hah_s2023' is not a run of "
                                  "this experiment").startswith("error: ")
