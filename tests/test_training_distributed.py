"""Two worker processes (MultiWorkerMirroredStrategy over 127.0.0.1) train to
the same weights as one process on the same global batches."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small HebbianModel (two HaH blocks, no batch norm: batch norm statistics
# are per replica by design, so they would differ from one process's).
CONFIG = {
    "dataset": "fashion_mnist",
    "architecture": {"widths": [8, "M", 16, "M"], "hah_blocks": 2},
    # Two global batches of 32. Top-k thresholds are discontinuous, so the
    # last-bit differences of summing gradients per replica flip a few
    # selections and runs drift apart chaotically over tens of steps (8 SGD
    # steps: 5e-3, the same under Keras's own MirroredStrategy); over two
    # steps they stay at float rounding.
    "train_limit": 64,
    "validation_limit": 64,
    "epochs": 1,
    "batch_size": 32,
    "augment": True,
    "sparsity_images": 32,
    # SGD, not Adam: Adam divides each update by the gradient's own size, so
    # it would hide a gradient that is wrongly scaled by the replica count.
    "optimizer": "sgd",
    "learning_rate": 0.05,
}
# One process averages 32 per-example gradients; two workers each average 16
# and all-reduce. Measured difference: 3e-7. A HaH cost not divided by the
# replica count (twice the alphas) moves the weights by 1.6e-3.
TOLERANCE = 1e-5


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_command(config_path, out):
    return [sys.executable, "-m", "training", "train", "--config", config_path,
            "--out", out, "--verbose", "2"]


def _environment(tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def test_two_workers_train_to_the_same_weights_as_one_process(tmp_path):
    import keras

    import keras_hebb  # noqa: F401  (registers HebbianModel for loading)

    config_path = str(tmp_path / "config.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(CONFIG, f)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    multi_out = str(tmp_path / "two_workers")
    single_out = str(tmp_path / "one_process")
    # The one-process reference runs after the workers, not beside them: on
    # 2 busy cores a third process can starve a worker past the coordination
    # service's heartbeat timeout.
    workers = [
        subprocess.Popen(
            _train_command(config_path, multi_out), cwd=ROOT,
            env=_environment({"cluster": cluster,
                              "task": {"type": "worker", "index": index}}),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index in range(2)
    ]
    outputs = []
    try:
        for process in workers:
            outputs.append(process.communicate(timeout=300)[0])
    finally:
        for process in workers:
            process.kill()
    for process, output in zip(workers, outputs):
        assert process.returncode == 0, output[-3000:]
    single_run = subprocess.run(_train_command(config_path, single_out), cwd=ROOT,
                                env=_environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=300)
    assert single_run.returncode == 0, single_run.stdout[-3000:]

    with open(os.path.join(multi_out, "metrics.json")) as f:
        run = json.load(f)["run"]
    assert run["strategy"] == "multi_worker" and run["replicas"] == 2
    with open(os.path.join(single_out, "metrics.json")) as f:
        assert json.load(f)["run"]["replicas"] == 1
    # Only the chief (worker 0) writes the run directory.
    assert sorted(os.listdir(multi_out)) == [
        "config.yaml", "metrics.csv", "metrics.json", "model.keras", "tensorboard"]

    multi = keras.saving.load_model(os.path.join(multi_out, "model.keras"))
    single = keras.saving.load_model(os.path.join(single_out, "model.keras"))
    keras.utils.set_random_seed(2022)  # the program's seed: its initial weights
    from training.train import _build_model
    from training.config import validate
    from keras_hebb.data import dataset_spec

    initial = _build_model(validate(dict(CONFIG)), dataset_spec("fashion_mnist"))
    assert len(multi.weights) == len(single.weights) == 4
    for w_multi, w_single, w_initial in zip(multi.weights, single.weights,
                                            initial.weights):
        a, b, c = (np.asarray(w.numpy()) for w in (w_multi, w_single, w_initial))
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=w_multi.path)
        # Training moved every weight far more than the tolerance.
        assert np.abs(b - c).max() > 100 * TOLERANCE, w_multi.path
