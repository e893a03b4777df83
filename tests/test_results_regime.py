"""`make results` in the regime study's form, from synthetic files: the
alpha = 0 network for every seed as its own row, what HaH adds seed by
seed, certified accuracy, and a named section of a document."""

import json
import os

import pytest
from test_results_report import _write_model

from experiments import docs, results, results_summary, results_tables
from experiments.networks import NETWORKS
from training import config as run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_runs_seeded_ablations_per_seed_and_hah_overrides_on_hah_runs():
    runs = results.plan([1, 2], ["hah_alpha0", "standard_noise"], seeded=["hah_alpha0"],
                        hah_overrides=["hah_alphas=[0.45,0.25]"])
    by_name = {r[0]: r for r in runs}
    assert sorted(by_name) == ["hah_alpha0_s1", "hah_alpha0_s2", "hah_s1", "hah_s2",
                               "standard_noise", "standard_s1", "standard_s2"]
    # The HaH override reaches every HaH run; alpha 0 still wins for the ablation.
    assert by_name["hah_s2"][2] == ["seed=2", "hah_alphas=[0.45,0.25]"]
    config = run_config.load_config(os.path.join(ROOT, NETWORKS["small"]["hah"]),
                                    by_name["hah_alpha0_s2"][2])
    assert config["hah_alphas"] == 0.0 and config["seed"] == 2
    assert by_name["standard_noise"][2] == ["seed=1", "noise_sigma=0.25"]
    assert by_name["hah_alpha0_s2"][4] == "standard_s2"  # transfer source
    for name in ("standard_noise", "hah_demote01", "hah_torch_init"):
        base, overrides, _ = results.ABLATIONS[name]
        run_config.load_config(os.path.join(ROOT, NETWORKS["small"][base]), overrides)


def test_only_makes_the_named_runs_in_that_order_with_the_plan_transfer_sources(
        tmp_path, monkeypatch):
    made = []

    def fake_step(label, command, arguments):
        out = arguments[arguments.index("--out") + 1]
        os.makedirs(out, exist_ok=True)
        made.append(label)
        if command == "train":
            open(os.path.join(out, "model.keras"), "w").close()
        else:
            with open(os.path.join(out, "report.json"), "w") as f:
                json.dump({"models": {"m": {}}}, f)
        return 1.0

    monkeypatch.setattr(results.steps, "run", fake_step)
    runs = results.plan([1, 2], [], seeded=["hah_alpha0"])
    results.run_all(str(tmp_path), runs, results.BUDGETS["tiny"], 8, lambda *a: None,
                    only=["hah_alpha0_s2", "standard_s1"])
    # hah_alpha0_s2's transfer source (standard_s2) is trained first; standard_s1's
    # is the next seed's standard network, already trained: nothing else is made.
    assert made == ["train hah_alpha0_s2", "train standard_s2", "evaluate hah_alpha0_s2",
                    "train standard_s1", "evaluate standard_s1"]
    args = results._parser().parse_args(["--out", str(tmp_path), "--only", "hah_s3"])
    with pytest.raises(results.UsageError, match="--only: 'hah_s3' is not a run"):
        results._settings(args)


def _certified(tmp_path, name, at_025, at_05):
    path = tmp_path / "eval" / name / "report.json"
    report = json.loads(path.read_text())
    entry = report["models"][name]
    entry["certified"] = [
        {"sigma": 0.25, "radii": [0.0, 0.25, 0.5], "certified_accuracy": [0.9, at_025, at_05]},
        {"sigma": 0.5, "radii": [0.0, 0.25, 0.5], "certified_accuracy": [0.8, at_025 - 0.1,
                                                                           at_05 + 0.05]}]
    report["settings"]["certify"] = {"sigmas": [0.25, 0.5], "images": 100, "n": 1000,
                                     "n0": 100, "alpha": 0.001}
    path.write_text(json.dumps(report))


@pytest.fixture
def regime(tmp_path):
    # Worst case at Linf 0.02: standard 0.50/0.40, HaH 0.30/0.20, alpha0 0.28/0.20.
    # Certified at r = 0.25: standard 0.5/0.4, HaH 0.7/0.6, alpha0 0.6/0.6.
    numbers = {"standard_s1": (0.50, 0.5), "hah_s1": (0.30, 0.7), "hah_alpha0_s1": (0.28, 0.6),
               "standard_s2": (0.40, 0.4), "hah_s2": (0.20, 0.6), "hah_alpha0_s2": (0.20, 0.6)}
    for name, (worst, cert) in numbers.items():
        _write_model(tmp_path, name, worst, worst + 0.05)
        _certified(tmp_path, name, cert, cert - 0.2)
    runs = results.plan([1, 2], ["hah_alpha0"], seeded=["hah_alpha0"])
    summary = results_summary.collect(str(tmp_path), runs)
    path = results_tables.write(str(tmp_path), summary, {}, results.GOALS, command="test")
    with open(path) as f:
        return tmp_path, summary, f.read()


def test_alpha0_for_every_seed_is_a_group_of_the_main_table(regime):
    _, summary, text = regime
    assert list(summary["groups"]) == ["standard", "hah", "hah_alpha0"]
    assert summary["groups"]["hah_alpha0"]["seeds"] == [1, 2]
    assert summary["ablations"] == []
    main = text.split("## Standard vs HaH")[1].split("###")[0]
    assert "| hah_alpha0 | 1, 2 |" in main


def test_what_hah_adds_is_paired_by_seed(regime):
    _, summary, text = regime
    linf = summary["paired"]["hah_alpha0"]["measures"]["L∞ 0.02"]
    # HaH minus alpha0: +0.02 (seed 1) and 0.00 (seed 2).
    assert linf["values"] == pytest.approx([0.02, 0.0])
    assert summary["paired"]["standard"]["measures"]["L∞ 0.02"]["mean"] == pytest.approx(-0.2)
    section = text.split("## What HaH adds, seed by seed")[1].split("\n## ")[0]
    assert "| hah_alpha0 | 1, 2 |" in section and "+1.0 ± 1.4" in section
    # -20 points with no spread: bold (clear).
    assert "**-20.0 ± 0.0**" in section


def test_what_the_cost_adds_to_a_variant_is_paired_with_its_alpha0_twin(tmp_path):
    # Worst case at Linf 0.02, seeds 1/2: no-threshold 0.60/0.50, its alpha0
    # twin 0.50/0.45 -> +10 and +5 points.
    numbers = {"standard_s1": 0.5, "hah_s1": 0.3, "hah_no_threshold_s1": 0.6,
               "hah_no_threshold_alpha0_s1": 0.5, "standard_s2": 0.4, "hah_s2": 0.2,
               "hah_no_threshold_s2": 0.5, "hah_no_threshold_alpha0_s2": 0.45}
    for name, worst in numbers.items():
        _write_model(tmp_path, name, worst, worst + 0.05)
    seeded = ["hah_no_threshold", "hah_no_threshold_alpha0"]
    summary = results_summary.collect(str(tmp_path), results.plan([1, 2], [], seeded=seeded))
    assert list(summary["cost_twins"]) == ["hah_no_threshold"]
    linf = summary["cost_twins"]["hah_no_threshold"]["measures"]["L∞ 0.02"]
    assert linf["values"] == pytest.approx([0.10, 0.05])
    text = open(results_tables.write(str(tmp_path), summary, {}, results.GOALS,
                                     command="test")).read()
    section = text.split("## What HaH adds, seed by seed")[1].split("\n## ")[0]
    assert "| hah_no_threshold - hah_no_threshold_alpha0 | 1, 2 | " in section
    assert "+7.5 ± 3.5" in section
    # Without twins the key is absent, so older results.json files stay as they were.
    assert "cost_twins" not in results_summary.collect(
        str(tmp_path), results.plan([1, 2], [], seeded=["hah_no_threshold"]))


def test_certified_accuracy_is_the_best_sigma_per_radius(regime):
    _, summary, text = regime
    hah = summary["models"]["hah_s1"]
    assert hah["certified"][0.25] == pytest.approx(0.7)       # sigma 0.25
    assert hah["certified"][0.5] == pytest.approx(0.55)       # sigma 0.5
    assert summary["groups"]["hah"]["certified"][0.25]["mean"] == pytest.approx(0.65)
    assert "certified L2 0.25" in text and "## Certified robustness" in text
    assert "| hah_s1 | 0.5 | 80.0 | 60.0 | 55.0 |" in text
    assert "certified.png" in text


def test_a_named_section_of_a_document(regime, tmp_path_factory):
    out, _, _ = regime
    doc = tmp_path_factory.mktemp("doc") / "DOC.md"
    begin, end = docs.section_markers("paper-alphas")
    doc.write_text(f"# Doc\n{docs.BEGIN}\nkeep\n{docs.END}\n"
                   f"{begin}\nOLD-TEXT\n{end}\n")
    assert docs.embed(str(doc), str(out / "results.md"), "paper-alphas")
    text = doc.read_text()
    assert "keep" in text and "OLD-TEXT" not in text and "### Standard vs HaH" in text
    assert not docs.embed(str(doc), str(out / "results.md"), "other")
