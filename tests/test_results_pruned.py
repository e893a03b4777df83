"""`python -m experiments results` on a checkout whose model files were pruned.

The committed studies keep the reports of every run but the `model.keras`
of only the networks a claim rests on (`experiments.kept_models`). Each
test builds a tiny study's out directory from synthetic reports, with no
model file, and runs the pipeline's tiny mode with `steps.run` recording
the steps instead of running them: a model is trained only when a step of
the call needs it.
"""

import json

import pytest

from experiments import full_autoattack, results, steps


def _finished(out, folder, name):
    """A finished evaluation (`eval`) or AutoAttack report of run `name`."""
    path = out / folder / name
    path.mkdir(parents=True)
    record = {"norm": "linf", "budget": 0.02, "robust_accuracy": 0.5,
              "accuracy_after_gradient": 0.5}
    entry = {"clean_accuracy": 0.9, "noise": [{"sigma": 0.1, "accuracy": 0.8}],
             "attacks": {"linf": [record], "l2": [dict(record, norm="l2", budget=0.5)]},
             "smallest_breaking_budget": {"linf": [0.02, None], "l2": [0.5, None]},
             "checks": {}, "sparsity": [], "seconds": 1.0}
    settings = {"name": "quick", "images": 32,
                "model_files": {name: f"../../runs/{name}/model.keras"}}
    (path / "report.json").write_text(json.dumps(
        {"settings": settings, "models": {name: entry}}))


#: The plan of `--seeds 2022 --ablations hah_alpha0`: standard_s2022 (its
#: transfer source hah_s2022), hah_s2022 and hah_alpha0 (both standard_s2022).
RUNS = ("standard_s2022", "hah_s2022", "hah_alpha0")


@pytest.fixture
def pruned(tmp_path, monkeypatch):
    """`(out, call)`: a study whose runs have their metrics and finished
    evaluations but no model file; `call(*arguments)` runs the pipeline on
    it and returns the titles of the steps it ran."""
    out = tmp_path / "study"
    for name in RUNS:
        run = out / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"final": {"val_accuracy": 0.9}, "run": {"validation_examples": 10000}}))
        _finished(out, "eval", name)

    def call(*arguments):
        made = []
        monkeypatch.setattr(steps, "run", lambda title, name, argv: made.append(title) or 0.0)
        assert results.main(["--tiny", "--out", str(out), "--seeds", "2022",
                             "--ablations", "hah_alpha0", *arguments]) == 0
        return made

    return out, call


def test_finished_reports_without_model_files_train_nothing(pruned):
    out, call = pruned
    _finished(out, full_autoattack.FOLDER, "hah_s2022")
    assert call("--autoattack-images", "8", "--autoattack-runs", "hah_s2022") == []
    assert (out / "results.md").exists()


def test_train_only_with_only_retrains_that_model_and_not_its_transfer_source(pruned):
    _, call = pruned
    assert call("--train-only", "--only", "hah_alpha0") == ["train hah_alpha0"]


def test_a_pending_evaluation_trains_the_run_and_its_transfer_source(pruned):
    out, call = pruned
    (out / "eval" / "hah_alpha0" / "report.json").unlink()
    assert call() == ["train hah_alpha0", "train standard_s2022", "evaluate hah_alpha0"]


def test_a_pending_autoattack_trains_only_the_attacked_run(pruned):
    _, call = pruned
    assert call("--autoattack-images", "8", "--autoattack-runs", "hah_s2022") == [
        "train hah_s2022", "autoattack hah_s2022"]


def test_a_pruned_adversarial_run_made_before_an_option_was_added_trains_again(tmp_path):
    # A committed adversarially trained run's config predates
    # adversarial.batch_norm_statistics: without its model file, the same
    # training command must resume it from the start, not call it another
    # config.
    from training import train
    from training.config import dump_config, load_config
    from experiments.networks import NETWORKS, config_path

    base, overrides, _ = results.ABLATIONS["recipe_at"]
    config = load_config(config_path(NETWORKS["small"][base]), overrides)
    saved = dict(config, adversarial={k: v for k, v in config["adversarial"].items()
                                      if k != "batch_norm_statistics"})
    (tmp_path / "config.yaml").write_text(dump_config(saved))
    assert train.prepare_run_dir(str(tmp_path), config) == "resume"
    other = dict(config, adversarial=dict(config["adversarial"], eps=0.05))
    with pytest.raises(train.UsageError, match="another config"):
        train.prepare_run_dir(str(tmp_path), other)


def test_the_report_lists_the_runs_without_a_model_file_and_how_to_retrain_one(pruned):
    out, call = pruned
    (out / "runs" / "standard_s2022" / "model.keras").write_bytes(b"")
    call("--report-only")
    markdown = (out / "results.md").read_text()
    assert "Not committed (2): hah_alpha0, hah_s2022;" in markdown
    assert "--train-only --only NAME` retrains one" in markdown
    assert "--report-only" not in markdown.split("Not committed")[1].split("\n")[0]
    assert "a retrained model is a re-run, not the committed network" in markdown


def test_evaluate_names_the_runs_a_study_evaluates_and_reports(pruned):
    # The others stay in the plan as transfer sources: never evaluated,
    # and not listed as missing in the report.
    out, call = pruned
    for name in ("hah_s2022", "hah_alpha0"):
        (out / "eval" / name / "report.json").unlink()
    assert call("--evaluate", "hah_alpha0") == [
        "train hah_alpha0", "train standard_s2022", "evaluate hah_alpha0"]
    incomplete = [line for line in (out / "results.md").read_text().splitlines()
                  if line.startswith("**Incomplete**")]
    assert incomplete == ["**Incomplete**: not evaluated yet: hah_alpha0."]


def test_evaluate_with_a_name_outside_the_plan_is_a_one_line_error(pruned, capsys):
    out, _ = pruned
    assert results.main(["--tiny", "--out", str(out), "--seeds", "2022", "--ablations",
                         "hah_alpha0", "--evaluate", "hah_s2023"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--evaluate: 'hah_s2023' is not a run of this experiment" in error
    assert len(error.splitlines()) == 1


def test_evaluate_with_a_seeded_ablation_means_all_its_seeds(pruned):
    _, call = pruned
    assert call("--seeded", "hah_alpha0", "--evaluate", "hah_alpha0") == [
        "train hah_alpha0_s2022", "train standard_s2022", "evaluate hah_alpha0_s2022"]
