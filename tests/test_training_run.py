"""The training program end to end: run directory, resume after SIGKILL,
reproducible metrics, finished runs never overwritten silently."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {
    "dataset": "fashion_mnist",
    "architecture": {"widths": [8, "M", 16, "M"], "hah_blocks": 1},
    "train_limit": 384,
    "validation_limit": 128,
    "epochs": 3,
    "batch_size": 64,
    "lr_milestones": [2],
    "sparsity_images": 64,
}


def _command(config_path, out, *extra):
    return [sys.executable, "-m", "training", "train", "--config", config_path,
            "--out", out, "--verbose", "2", *extra]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(config_path, out, *extra):
    return subprocess.run(_command(config_path, out, *extra), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(config_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "uninterrupted")
    result = _run(config_path, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_run_directory_holds_model_config_metrics_and_tensorboard_logs(finished_run):
    import keras
    import tensorflow as tf

    import keras_hebb

    out, result = finished_run
    assert sorted(os.listdir(out)) == [
        "config.yaml", "metrics.csv", "metrics.json", "model.keras", "tensorboard"]
    with open(os.path.join(out, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["train_limit"] == 384 and saved["optimizer"] == "adam"  # resolved
    metrics = _metrics(out)
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    assert [row["learning_rate"] for row in metrics["epochs"]] == pytest.approx(
        [1e-3, 1e-3, 1e-4])
    last = metrics["epochs"][-1]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "hah_block1_hah",
                "sparsity_block1_hah", "sparsity_block2_relu"):
        assert key in last, key
    # Top 20% kept per channel, so about a fifth of the HaH outputs are non-zero.
    assert 0.05 < last["sparsity_block1_hah"] < 0.25
    assert metrics["final"] == last
    with open(os.path.join(out, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 4
    tags = set()
    for path in glob.glob(os.path.join(out, "tensorboard", "*", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_hah_block1_hah",
                "epoch_sparsity_block1_hah", "epoch_learning_rate"):
        assert tag in tags, tag
    assert "Epoch 3/3" in result.stdout
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert isinstance(model, keras_hebb.HebbianModel)
    from keras_hebb.data import load_arrays

    images, labels = load_arrays("fashion_mnist", "test", limit=128)
    accuracy = np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels)
    assert accuracy == pytest.approx(last["val_accuracy"], abs=1e-6)


def test_same_config_and_seed_give_the_same_metrics(finished_run, config_path, tmp_path):
    out = str(tmp_path / "again")
    result = _run(config_path, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metrics(out)["epochs"] == _metrics(finished_run[0])["epochs"]


def _killed_after_first_checkpoint_then_resumed(config_path, out, *extra):
    """Runs the program with `extra`, SIGKILLs it once its first checkpoint
    is written, runs it again; returns the second run's result."""
    state = os.path.join(out, "checkpoint", "training_metadata.json")
    process = subprocess.Popen(_command(config_path, out, *extra), cwd=ROOT, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(state) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "model.keras"))
    with open(state) as f:
        killed_after = json.load(f)["epoch"]
    assert killed_after == 1
    result = _run(config_path, out, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {out} after epoch 1/3." in result.stdout
    assert "Epoch 1/3" not in result.stdout and "Epoch 2/3" in result.stdout
    assert _metrics(out)["run"]["resumed_after_epoch"] == [1]
    assert not os.path.exists(os.path.join(out, "checkpoint"))
    return result


def test_run_killed_after_its_first_checkpoint_resumes_and_matches(
        finished_run, config_path, tmp_path):
    out = str(tmp_path / "killed")
    _killed_after_first_checkpoint_then_resumed(config_path, out)
    metrics = _metrics(out)
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    # Weights, Adam's state, learning rate and data order all restored: the
    # resumed run ends exactly where the uninterrupted one did.
    assert metrics["epochs"] == _metrics(finished_run[0])["epochs"]


#: FGSM with a random start and half-noisy batches: the random start and
#: the noise draws must follow the step count for a resumed run to craft
#: and noise exactly what the uninterrupted one did.
DEFENDED = ("--set", "adversarial.attack=fgsm_rs", "--set", "adversarial.eps=0.1",
            "--set", "noise_sigma=0.25", "--set", "noise_fraction=0.5")


def test_adversarial_and_noise_training_killed_and_resumed_match_an_uninterrupted_run(
        config_path, tmp_path, finished_run):
    whole = str(tmp_path / "whole")
    result = _run(config_path, whole, *DEFENDED)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(whole, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["adversarial"]["attack"] == "fgsm_rs" and saved["noise_fraction"] == 0.5
    # The options act: the defended run's training loss differs from the plain one's.
    plain_loss = _metrics(finished_run[0])["epochs"][0]["loss"]
    assert abs(_metrics(whole)["epochs"][0]["loss"] - plain_loss) > 1e-3
    out = str(tmp_path / "killed")
    _killed_after_first_checkpoint_then_resumed(config_path, out, *DEFENDED)
    assert _metrics(out)["epochs"] == _metrics(whole)["epochs"]


def test_finished_run_is_not_overwritten_silently(finished_run, config_path):
    out = finished_run[0]
    before = os.path.getmtime(os.path.join(out, "model.keras"))
    from training import train as train_program

    assert train_program.main(["--config", config_path, "--out", out]) == 2
    assert train_program.main(
        ["--config", config_path, "--out", out, "--skip-finished"]) == 0
    assert train_program.main(
        ["--config", config_path, "--out", out, "--skip-finished",
         "--set", "epochs=4"]) == 2
    assert os.path.getmtime(os.path.join(out, "model.keras")) == before
