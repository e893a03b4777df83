"""`python -m training train`: train a model from a config into a run directory.

    python -m training train --config training/configs/fashion_mnist_hah_small.yaml \\
        --out runs/fmnist_hah [--set epochs=3 --set batch_size=64] [--overwrite]

The run directory gets `config.yaml` (the resolved config, written first),
`checkpoint/` (the last finished epoch: weights and optimizer state),
`tensorboard/` (loss, accuracy, learning rate, per-layer HaH costs,
per-layer sparsity), `metrics.json` and `metrics.csv` (one row per epoch)
and, when training ends, `model.keras`. The same command run again after an
interruption (Ctrl-C, SIGKILL, preemption) continues from the last
checkpoint; on a finished run it stops with an error unless `--overwrite`
(start over) or `--skip-finished` (do nothing) is given. Mistakes a user can
make (bad config or override, missing data, a run directory holding another
run) end with one line on stderr and exit status 2.
"""

import os
import shutil
import sys
import tempfile

import yaml

from export.cli import (
    Parser,
    UsageError,
    first_line,
    prepare_tensorflow,
    usage_failure,
)

prepare_tensorflow()  # before TensorFlow is imported

from training.config import (  # noqa: E402
    DEFAULTS,
    ConfigError,
    dump_config,
    learning_rate_at,
    load_config,
)

#: Files and folders of a run directory (all that --overwrite removes).
RUN_FILES = ("model.keras", "config.yaml", "metrics.json", "metrics.csv",
             "checkpoint", "tensorboard")


def build_parser():
    parser = Parser(
        prog="python -m training train",
        description="Train a keras_hebb model from a YAML config into a run "
        "directory; the same command resumes an interrupted run.",
    )
    parser.add_argument("--config", required=True, help="YAML config file.")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="Override a config key (YAML value), e.g. --set epochs=3 "
        "--set block_options.threshold=null. Repeatable.",
    )
    parser.add_argument("--out", required=True, help="Run directory.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--overwrite", action="store_true",
                      help="Delete a run already in --out and start over.")
    what.add_argument("--skip-finished", action="store_true",
                      help="Exit 0 without training if --out holds a finished "
                      "run of the same config.")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras verbosity: 1 progress bars (default), "
                        "2 one line per epoch, 0 silent.")
    return parser


def _saved_value(saved, key):
    """A saved config's value of `key` as today's config spells it: a key
    missing from a saved config is one added since (e.g. noise_sigma), and
    so is an adversarial-training option missing from its `adversarial`
    mapping (e.g. batch_norm_statistics): that run used its value of
    then (`ADVERSARIAL_BEFORE_OPTIONS`, else today's default)."""
    value = saved.get(key, DEFAULTS.get(key))
    if key == "adversarial" and isinstance(value, dict):
        from keras_hebb.hebbian_model import ADVERSARIAL_BEFORE_OPTIONS, ADVERSARIAL_DEFAULTS

        value = {**ADVERSARIAL_DEFAULTS, **ADVERSARIAL_BEFORE_OPTIONS, **value}
    return value


def _config_difference(saved, config):
    keys = [key for key in config if _saved_value(saved, key) != config[key]]
    if not keys:
        return None
    key = keys[0]
    return f"{key}: {saved.get(key)!r} there, {config[key]!r} now"


def prepare_run_dir(out, config, overwrite=False, skip_finished=False):
    """Checks `out` and returns `"new"`, `"resume"` or `"finished"`.

    Raises:
        UsageError: `out` holds a finished run (without `--overwrite` or
            `--skip-finished`), or an unfinished run of another config.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, expected a run directory.")
    if overwrite:
        for name in RUN_FILES:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    config_path = os.path.join(out, "config.yaml")
    saved = None
    if os.path.exists(config_path):
        with open(config_path) as f:
            saved = yaml.safe_load(f) or {}
    finished = os.path.exists(os.path.join(out, "model.keras"))
    difference = _config_difference(saved, config) if saved is not None else None
    if finished:
        if skip_finished and difference is None:
            return "finished"
        raise UsageError(
            f"Run directory {out} holds a finished run (model.keras): pass "
            f"--overwrite to replace it, or choose another --out."
            if difference is None else
            f"Run directory {out} holds a finished run of another config "
            f"({difference}): pass --overwrite to replace it, or choose "
            f"another --out."
        )
    if saved is not None:
        if difference is not None:
            raise UsageError(
                f"Run directory {out} holds an unfinished run of another "
                f"config ({difference}): resume it with its own config, pass "
                f"--overwrite to start over, or choose another --out."
            )
        return "resume"
    return "new"


def _build_model(config, spec):
    """The compiled-to-be model of a config (under the strategy's scope)."""
    from keras_hebb import architectures
    from keras_hebb.hebbian_model import HebbianModel

    architecture = config["architecture"]
    kwargs = {"input_shape": spec.shape, "num_classes": spec.num_classes}
    if config["hah_alphas"] is not None:
        kwargs["hah_alphas"] = config["hah_alphas"]
    if config["block_options"]:
        kwargs["block_options"] = config["block_options"]
    if config["weight_init"] != "glorot_uniform":
        kwargs["weight_init"] = config["weight_init"]
    try:
        if isinstance(architecture, dict):
            model = architectures.build_vgg(
                architecture["widths"], architecture["hah_blocks"],
                name="vgg_custom", **kwargs)
        else:
            model = architectures.PRESETS[architecture](**kwargs)
    except ValueError as error:
        raise ConfigError(
            f"Cannot build architecture {architecture!r} for dataset "
            f"{config['dataset']!r} (images {spec.shape}): {first_line(error)}"
        ) from None
    if not isinstance(model, HebbianModel) and (
        config["hah_alphas"] is not None or config["block_options"]
    ):
        raise ConfigError(
            f"Architecture {architecture!r} has no HaH blocks: remove "
            f"hah_alphas and block_options from the config."
        )
    if config["adversarial"] is not None:
        # Adversarial training is HebbianModel's step, for a standard
        # network too (no HaH block: the step without HaH costs).
        model = HebbianModel.from_model(model, adversarial=config["adversarial"])
    return model


def _optimizer(config):
    import keras

    if config["optimizer"] == "adam":
        return keras.optimizers.Adam(config["learning_rate"])
    return keras.optimizers.SGD(config["learning_rate"], momentum=0.9)


def train(config, out, verbose=1, state="new"):
    """Trains a model from a validated config into the run directory `out`.

    Returns:
        The final epoch's logs (dict of floats).
    """
    import numpy as np

    from keras_hebb import data
    from training import callbacks as run_callbacks

    strategy_name, strategy, chief = _start(config)
    # Non-chief workers of a cluster write their logs to a scratch folder.
    log_root = out if chief else tempfile.mkdtemp(prefix="keras_hebb_worker_")
    os.makedirs(out, exist_ok=True)
    if chief and state == "new":
        run_callbacks.write_atomically(
            os.path.join(out, "config.yaml"), dump_config(config))
    (train_images, train_labels), (val_images, val_labels) = _load_arrays(config)

    # Reads the checkpoint once: the epoch to resume at and, at the start
    # of fit, the weights and optimizer state of that same checkpoint.
    backup = run_callbacks.ResumableBackup(os.path.join(out, "checkpoint"), write=chief)
    if backup.initial_epoch:
        print(f"Resuming {out} after epoch {backup.initial_epoch}/{config['epochs']}.",
              flush=True)
    steps = data.steps_per_epoch(len(train_labels), config["batch_size"])
    train_data, val_data = _pipelines(
        config, (train_images, train_labels), (val_images, val_labels),
        backup.initial_epoch, strategy_name)
    with strategy.scope():
        model = _compiled_model(config, data.dataset_spec(config["dataset"]))

    sparsity_images = val_images[: config["sparsity_images"]].astype(np.float32) / 255.0
    info = _run_info(strategy_name, strategy, len(train_labels), len(val_labels), steps)
    recorder = run_callbacks.MetricsRecorder(
        out, info, write=chief, initial_epoch=backup.initial_epoch)
    history = model.fit(
        train_data,
        epochs=config["epochs"],
        initial_epoch=backup.initial_epoch,
        steps_per_epoch=steps,
        validation_data=val_data,
        callbacks=_callbacks(config, steps, sparsity_images, recorder, log_root, backup),
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles, by (seed, epoch)
    )
    final = dict(recorder.epochs[-1]) if recorder.epochs else {}
    if chief:
        _publish(model, out, recorder, final, backup)
    else:
        shutil.rmtree(log_root, ignore_errors=True)
    del history
    return final


def _start(config):
    """Seeds, determinism and the strategy: `(name, strategy, chief)`."""
    import keras
    import tensorflow as tf

    from training.distribute import choose_strategy_name, is_chief, make_strategy

    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    strategy_name = choose_strategy_name(config["strategy"])
    strategy = make_strategy(strategy_name)
    replicas = strategy.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise ConfigError(
            f"Invalid config value batch_size={config['batch_size']}: the "
            f"global batch must divide evenly over the {replicas} replicas."
        )
    return strategy_name, strategy, is_chief(strategy)


def _load_arrays(config):
    """The uint8 `(images, labels)` of the training and validation splits."""
    from keras_hebb import data

    try:
        return tuple(
            data.load_uint8_arrays(config["dataset"], config[f"{part}_split"],
                                   config[f"{part}_limit"], config["data_dir"])
            for part in ("train", "validation"))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _pipelines(config, train_arrays, val_arrays, initial_epoch, strategy_name):
    """The training pipeline (all remaining epochs) and the validation one."""
    import tensorflow as tf

    from keras_hebb import data

    epochs = config["epochs"]
    # One dataset holding all the remaining epochs: each epoch's order and
    # crops depend on (seed, epoch) only, so a resumed run sees the same
    # data as an uninterrupted one.
    train_data = data.make_dataset(
        *train_arrays, config["dataset"],
        batch_size=config["batch_size"], shuffle=True,
        augment=config["augment"], seed=config["seed"], epochs=epochs,
        initial_epoch=min(initial_epoch, epochs - 1), noise_sigma=config["noise_sigma"],
        noise_fraction=config["noise_fraction"],
    )
    val_data = data.make_dataset(
        *val_arrays, config["dataset"],
        batch_size=config["batch_size"], epochs=1,
    )
    if strategy_name == "multi_worker":
        # In-memory data cannot be sharded by file; every worker builds the
        # same pipeline and keeps its slice of each global batch.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        train_data = train_data.with_options(options)
        val_data = val_data.with_options(options)
    return train_data, val_data


def _compiled_model(config, spec):
    import keras

    model = _build_model(config, spec)
    model.compile(
        optimizer=_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _run_info(strategy_name, strategy, train_examples, validation_examples, steps):
    import keras
    import tensorflow as tf

    return {
        "strategy": strategy_name,
        "replicas": strategy.num_replicas_in_sync,
        "train_examples": int(train_examples),
        "validation_examples": int(validation_examples),
        "steps_per_epoch": steps,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _callbacks(config, steps, sparsity_images, recorder, log_root, backup):
    """The run's callbacks, in the order they must run."""
    import keras

    from training import callbacks as run_callbacks

    callbacks = [
        run_callbacks.SparsityLogger(sparsity_images),
        run_callbacks.EpochLearningRate(lambda epoch: learning_rate_at(config, epoch)),
        recorder,
        keras.callbacks.TensorBoard(
            os.path.join(log_root, "tensorboard"), write_graph=False),
        # Last: a checkpoint is written only after the epoch's logs are.
        backup,
    ]
    if config["prune_to"] is not None:
        from keras_hebb.pruning import MagnitudePruning

        # Gradual magnitude pruning over the first two thirds of training;
        # the last third trains the remaining weights with the masks fixed.
        # First: the masks are applied before anything reads the weights,
        # and its `weight_sparsity` goes into the epoch's logs.
        epochs = config["epochs"]
        callbacks.insert(0, MagnitudePruning(
            config["prune_to"], end_step=max(1, (2 * steps * epochs) // 3),
            frequency=max(1, min(50, steps // 4))))
    return callbacks


def _publish(model, out, recorder, final, backup):
    """Writes `model.keras` and the final metrics; drops the checkpoint."""
    # Atomic: model.keras exists only when it is complete, and it marks
    # the run finished; the checkpoint goes only after it is in place.
    partial = os.path.join(out, ".model.partial.keras")
    model.save(partial)
    os.replace(partial, os.path.join(out, "model.keras"))
    recorder.save(final=final)
    shutil.rmtree(backup.backup_dir, ignore_errors=True)


def main(argv=None):
    """Runs `python -m training train`; returns the exit status."""
    from keras_hebb.data import DatasetUnavailableError
    from training.distribute import StrategyError

    try:
        args = build_parser().parse_args(argv)
        config = load_config(args.config, args.set)
        state = prepare_run_dir(args.out, config, args.overwrite, args.skip_finished)
        if state == "finished":
            print(f"{args.out} already holds this finished run; nothing to do.")
            return 0
        final = train(config, args.out, verbose=args.verbose, state=state)
    except (ConfigError, UsageError, StrategyError, DatasetUnavailableError,
            FileNotFoundError) as error:
        return usage_failure(error)
    except KeyboardInterrupt:
        print(f"Interrupted: run the same command to resume from the last "
              f"checkpoint in {args.out}.", file=sys.stderr)
        return 130
    shown = ", ".join(f"{key}={final[key]:.4f}" for key in
                      ("loss", "accuracy", "val_loss", "val_accuracy") if key in final)
    print(f"Finished {args.out}: {shown}; model in "
          f"{os.path.join(args.out, 'model.keras')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
