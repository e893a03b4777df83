"""The repository commits a study's model files only for the networks a
claim rests on (`python -m experiments kept-models`, docs/TRAINING.md): the
committed `results/*/runs/*/model.keras` are exactly the kept ones."""

from experiments import kept_models


def test_no_model_file_is_committed_that_no_claim_rests_on():
    extra = sorted(set(kept_models.present()) - kept_models.kept_paths())
    assert not extra, ("model files no claim rests on (`python -m experiments kept-models "
                       f"--prune` deletes them): {extra}")


def test_every_model_a_claim_rests_on_is_committed():
    missing = sorted(kept_models.kept_paths() - set(kept_models.present()))
    assert not missing, f"kept model files that are not in the repository: {missing}"
