"""The results report (`experiments.results_summary`, `results_tables`) from synthetic files.

Each model gets a `metrics.json` and a `report.json` with chosen numbers;
the test reads the Markdown the report writes.
"""

import json

import pytest

from experiments import results, results_summary, results_tables, steps


def _record(norm, eps, worst, gradient, paper):
    record = {"norm": norm, "budget": eps, "robust_accuracy": worst,
              "accuracy_after_gradient": gradient}
    if paper is not None:
        record["columns"] = {"gradient_only": gradient, "worst_case": worst,
                             "paper_protocol": paper}
    return record


def _write_model(out, name, worst, paper, suite="full"):
    """A run and its report: robust accuracy `worst` (and the paper's
    protocol `paper`, None for a report made before that column) at Linf
    0.02 and L2 0.5."""
    run = out / "runs" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(
        {"final": {"val_accuracy": 0.9}, "run": {"validation_examples": 10000}}))
    evaluation = out / "eval" / name
    evaluation.mkdir(parents=True)
    settings = {"name": suite, "images": 100, "attacks": ["pgd_ce", "apgd_ce", "apgd_t",
                                                          "spsa", "cw_l2"],
                "steps": 20, "restarts": 2, "apgd_steps": 50, "apgd_restarts": 1,
                "apgd_targets": 3, "spsa_steps": 20, "spsa_samples": 128,
                "spsa_images": 16, "cw_steps": 50, "cw_binary_steps": 4, "cw_images": 500,
                "model_files": {name: f"../../runs/{name}/model.keras"}}
    entry = {"clean_accuracy": 0.9,
             "noise": [{"sigma": 0.1, "accuracy": 0.8}],
             "attacks": {"linf": [_record("linf", 0.02, worst, worst + 0.1, paper)],
                         "l2": [_record("l2", 0.5, worst / 2, worst, paper)]},
             "checks": {"more_steps": {"passed": True}},
             "sparsity": [], "seconds": 1.0}
    (evaluation / "report.json").write_text(json.dumps(
        {"settings": settings, "models": {name: entry}}))


@pytest.fixture
def report(tmp_path):
    # Seed 1: the paper's protocol overstates by 4 (standard) and 10 (HaH)
    # points at Linf 0.02; seed 2: by 6 and 20. The ablation's report is
    # older than the paper-protocol column.
    for name, worst, paper in (("standard_s1", 0.50, 0.54), ("hah_s1", 0.30, 0.40),
                               ("standard_s2", 0.40, 0.46), ("hah_s2", 0.20, 0.40),
                               ("hah_alpha0", 0.25, None)):
        _write_model(tmp_path, name, worst, paper)
    runs = results.plan([1, 2], ["hah_alpha0"])
    summary = results_summary.collect(str(tmp_path), runs)
    path = results_tables.write(str(tmp_path), summary, {}, results.GOALS, command="test")
    with open(path) as f:
        return summary, f.read()


def test_each_model_shows_paper_protocol_beside_worst_case_and_the_overstatement(report):
    _, markdown = report
    assert "| hah_s1 | 1 | 30.0 / 40.0 (+10.0) |" in markdown  # Linf 0.02
    assert "| hah_s1 | 1 | 15.0 / 40.0 (+25.0) |" in markdown  # L2 0.5
    assert "| hah_s2 | 2 | 20.0 / 40.0 (+20.0) |" in markdown
    assert "| standard_s1 | 1 | 50.0 / 54.0 (+4.0) |" in markdown


def test_groups_show_mean_and_spread_of_the_overstatement(report):
    summary, markdown = report
    over = summary["groups"]["hah"]["overstates"]["linf"][0.02]
    assert over["mean"] == pytest.approx(0.15) and over["n"] == 2
    # Sample standard deviation of the per-seed differences 10 and 20.
    assert over["std"] == pytest.approx(0.0707, abs=1e-4)
    assert "| hah | 1, 2 | 25.0 ± 7.1 / 40.0 ± 0.0 (+15.0 ± 7.1) |" in markdown
    assert "| standard | 1, 2 | 45.0 ± 7.1 / 50.0 ± 5.7 (+5.0 ± 1.4) |" in markdown


def test_a_report_without_the_paper_column_renders_as_not_available(report):
    _, markdown = report
    row = next(line for line in markdown.splitlines()
               if line.startswith("| hah_alpha0 | 1 | 25.0 / "))
    assert row.count("n/a (n/a)") == 1


def test_the_suite_caps_are_stated_next_to_the_numbers(report):
    _, markdown = report
    assert "SPSA 20 steps x 128 probes on at most 16 images per L∞ budget" in markdown
    assert "CW-L2 4 binary steps x 50 iterations on at most 500 images" in markdown
    assert "APGD-T 50 steps x 1 restart(s) x 3 target classes" in markdown


def test_transfer_sources_are_standard_networks_where_there_are_several_seeds():
    sources = {name: source for name, _, _, _, source, _ in
               results.plan([1, 2, 3], ["hah_alpha0", "standard_pruned90"])}
    assert sources == {"standard_s1": "standard_s2", "standard_s2": "standard_s3",
                       "standard_s3": "standard_s1", "hah_s1": "standard_s1",
                       "hah_s2": "standard_s2", "hah_s3": "standard_s3",
                       "hah_alpha0": "standard_s1", "standard_pruned90": "standard_s1"}
    # One seed: the standard network's only other source is the HaH one.
    assert results.plan([7], [])[0][4] == "hah_s7"


def test_a_report_keeps_the_command_it_recorded_for_the_same_settings(tmp_path):
    report = tmp_path / "results.md"
    report.write_text("# Results\n\nMade by `python -m training results --out r --seeds 1,2 "
                      "--report-only --docs a.md`; every number ...\n")
    parser = results._parser()
    # The same settings, in another order, under the program's new name.
    same = ["--out", "r", "--docs", "a.md", "--report-only", "--seeds", "1,2"]
    assert steps.made_by("results", same, str(report), parser) == (
        "python -m training results --out r --seeds 1,2 --report-only --docs a.md")
    other = ["--out", "r", "--seeds", "1,3", "--report-only", "--docs", "a.md"]
    assert steps.made_by("results", other, str(report), parser) == (
        "python -m experiments results " + " ".join(other))
    assert steps.made_by("results", same, str(tmp_path / "none.md"), parser) == (
        "python -m experiments results " + " ".join(same))
