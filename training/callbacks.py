"""Callbacks of the training program: checkpoints, learning rate, logs."""

import csv
import io
import json
import os
import tempfile

import keras

from keras_hebb.sparsity import activation_layers, activation_statistics

CHECKPOINT_STATE = "training_metadata.json"


def write_atomically(path, text):
    """Writes `text` to `path` so that a reader sees the old or new file."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class ResumableBackup(keras.callbacks.Callback):
    """Epoch checkpoints that survive a kill at any moment, and the resume.

    Keras's `BackupAndRestore` writes `latest.weights.h5` in place and then
    the epoch in a separate JSON file: a SIGKILL during the write leaves a
    truncated HDF5 file, and one between the two writes pairs new weights
    with an old epoch. Here each checkpoint goes to a new file
    `epoch-<N>.weights.h5` (model and optimizer state: Adam's moments and
    step count), and only then does an atomic rename of
    `training_metadata.json` make it the current one; older files are
    deleted after that.

    The checkpoint is read once, when the callback is made: pass
    `initial_epoch=backup.initial_epoch` to `fit` (and to the data
    pipeline); at the start of `fit` the callback restores the weights and
    optimizer state of that same checkpoint.

    Under a multi-worker strategy only the chief writes; every worker
    restores from `backup_dir` (a filesystem all workers share).

    Args:
        backup_dir: checkpoint directory.
        write: whether this process writes checkpoints. Defaults to `True`.

    Attributes:
        initial_epoch: finished epochs in the checkpoint (0 if none).
    """

    def __init__(self, backup_dir, write=True):
        super().__init__()
        self.backup_dir = backup_dir
        self.write = write
        self._restore = self.saved_state(backup_dir)
        self.initial_epoch = self._restore["epoch"] if self._restore else 0

    @staticmethod
    def saved_state(backup_dir):
        """`{"epoch", "weights"}` of the checkpoint in `backup_dir`, or None."""
        path = os.path.join(backup_dir, CHECKPOINT_STATE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            state = json.load(f)
        weights = os.path.join(backup_dir, state.get("weights", ""))
        return state if os.path.exists(weights) else None

    def on_train_begin(self, logs=None):
        if self._restore is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, self._restore["weights"]))

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        finished = epoch + 1
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{finished}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name), overwrite=True)
        state = {"epoch": finished, "weights": name}
        write_atomically(
            os.path.join(self.backup_dir, CHECKPOINT_STATE), json.dumps(state)
        )
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


class EpochLearningRate(keras.callbacks.Callback):
    """Sets the learning rate at the start of every epoch from its index.

    The rate is a function of the epoch alone (`schedule(epoch)`), so a run
    resumed at epoch 70 uses the same rate as an uninterrupted one. Logs it
    as `learning_rate`.

    Args:
        schedule: function from a 0-based epoch to a learning rate.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(self.schedule(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.schedule(epoch))


class SparsityLogger(keras.callbacks.Callback):
    """Adds per-layer activation statistics to the epoch logs.

    At the end of each epoch, on a fixed batch of images, the fraction of
    non-zero activations of every activation layer (see
    `keras_hebb.sparsity.activation_statistics`) becomes the log
    `sparsity_<layer>` and the activation disparity `disparity_<layer>`,
    so TensorBoard and the metrics files record them with the losses.

    Args:
        images: the fixed batch (numpy, as the model takes it).
    """

    def __init__(self, images):
        super().__init__()
        self.images = images

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not len(self.images) or not activation_layers(self.model):
            return
        for row in activation_statistics(self.model, self.images):
            logs[f"sparsity_{row['layer']}"] = row["nonzero_fraction"]
            logs[f"disparity_{row['layer']}"] = row["disparity"]


class MetricsRecorder(keras.callbacks.Callback):
    """Keeps `metrics.json` and `metrics.csv` with one row per epoch.

    Both files are rewritten atomically after every epoch. On resume the
    rows already there are kept (up to the restored epoch), so the files
    always describe one consistent run.

    Args:
        run_dir: directory of the two files.
        info: dict stored under `"run"` in `metrics.json`.
        write: whether this process writes. Defaults to `True`.
        initial_epoch: epochs already done (restored from a checkpoint).
            Defaults to `0`.
    """

    def __init__(self, run_dir, info, write=True, initial_epoch=0):
        super().__init__()
        self.initial_epoch = initial_epoch
        self.json_path = os.path.join(run_dir, "metrics.json")
        self.csv_path = os.path.join(run_dir, "metrics.csv")
        self.info = info
        self.write = write
        self.epochs = []

    def on_train_begin(self, logs=None):
        initial = self.initial_epoch
        resumed = []
        if initial and os.path.exists(self.json_path):
            with open(self.json_path) as f:
                previous = json.load(f)
            self.epochs = [row for row in previous.get("epochs", [])
                           if row["epoch"] <= initial]
            resumed = previous.get("run", {}).get("resumed_after_epoch", [])
        if initial:
            self.info = {**self.info, "resumed_after_epoch": [*resumed, initial]}

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.epochs = [r for r in self.epochs if r["epoch"] < epoch + 1] + [row]
        self.save()

    def save(self, final=None):
        """Writes both files; `final` (a dict) is stored as `"final"`."""
        if not self.write:
            return
        document = {"run": self.info, "epochs": self.epochs}
        if final is not None:
            document["final"] = final
        write_atomically(self.json_path, json.dumps(document, indent=2) + "\n")
        columns = []
        for row in self.epochs:
            columns += [key for key in row if key not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.epochs)
        write_atomically(self.csv_path, text.getvalue())
