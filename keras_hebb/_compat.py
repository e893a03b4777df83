"""The fence around private Keras, TensorFlow and LiteRT API.

Every use of an upstream name that is not public API goes through this
module, so that an upgrade breaks here, in one place, and
`tests/test_compat.py` (one test per shim, each naming its shim) says which
assumption changed. Where a public API does the same job the library uses
it instead (`Model.compute_loss`, `Model.loss`, a plain `Callback` for the
training program's checkpoints, `Layer.add_loss` for the HaH cost, which
Keras scales for `tf.distribute` itself).

| shim                            | upstream name it relies on                | used by                                        |
|---------------------------------|-------------------------------------------|------------------------------------------------|
| `all_layers`                    | `keras.Layer._flatten_layers`             | HebbianModel, SimilarityMatchingModel, pruning |
| `loss_tracker`                  | `keras.Model._loss_tracker`               | SimilarityMatchingModel                        |
| `in_xla_context`                | `tensorflow.python.ops.control_flow_util` | `_selection` (no native op under XLA)          |
| `tape_is_recording`             | `tensorflow.python.eager.record`          | similarity-matching layers                     |
| `preserved_global_seed`         | eager context's `_seed`, `_rng`           | `robustness.attacks.global_seed`               |
| `in_multi_worker_mode`          | `StrategyExtended._in_multi_worker_mode`  | `training.distribute.is_chief`                 |
| `tflite_op_details`             | LiteRT `Interpreter._get_ops_details`     | `export.tflite.op_table`, benchmarks           |
| `tflite_tensor_details`         | LiteRT `Interpreter._get_tensor_details`  | `export.tflite.op_table`                       |
| `patch_keras_multi_worker_fit`  | `keras.src.backend.tensorflow.trainer`    | `training.distribute` (multi-worker fit)       |

`check_versions()` compares the installed versions with `TESTED_VERSIONS`
(the pins of `constraints.txt`, which a test keeps equal) and warns, naming the
shims at risk, when they differ; it runs once, on first import.
"""

import contextlib
import functools
import importlib.metadata
import warnings

#: The versions every shim was tested with (constraints.txt's pins).
TESTED_VERSIONS = {
    "keras": "3.15.1",
    "tensorflow-cpu": "2.21.0",
    "ai-edge-litert": "2.3.0",
}

#: Which shims depend on which distribution (one of them is installed for TF).
_SHIMS_BY_PACKAGE = {
    "keras": ("all_layers", "loss_tracker", "patch_keras_multi_worker_fit"),
    "tensorflow-cpu": ("in_xla_context", "in_multi_worker_mode", "tape_is_recording",
                       "preserved_global_seed"),
    "ai-edge-litert": ("tflite_op_details", "tflite_tensor_details"),
}
#: TensorFlow is the same code under either distribution name.
_ALTERNATIVE_NAMES = {"tensorflow-cpu": ("tensorflow-cpu", "tensorflow")}


class CompatibilityError(RuntimeError):
    """An upstream private API a shim relies on is missing or changed."""


def _broken(shim, detail):
    return CompatibilityError(
        f"keras_hebb._compat.{shim}: {detail} (tested with "
        + ", ".join(f"{k}=={v}" for k, v in TESTED_VERSIONS.items())
        + "); update the shim for the installed version."
    )


def installed_version(package):
    """The installed version of `package` (or of an alternative name of
    the same code, e.g. `tensorflow` for `tensorflow-cpu`), else `None`."""
    for name in _ALTERNATIVE_NAMES.get(package, (package,)):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_mismatches():
    """`[(package, installed, tested)]` for each installed package whose
    version differs from the tested one."""
    mismatches = []
    for package, tested in TESTED_VERSIONS.items():
        installed = installed_version(package)
        if installed is not None and installed != tested:
            mismatches.append((package, installed, tested))
    return mismatches


@functools.cache
def check_versions():
    """Warns once per process for each package not at its tested version,
    naming the shims that rely on its private API."""
    for package, installed, tested in version_mismatches():
        warnings.warn(
            f"keras_hebb was tested with {package}=={tested}; {installed} is "
            f"installed. keras_hebb._compat's shims "
            f"{', '.join(_SHIMS_BY_PACKAGE[package])} rely on its private API "
            "and may fail or change behaviour (python -m pytest "
            "tests/test_compat.py checks them).",
            RuntimeWarning,
            stacklevel=2,
        )


# ------------------------------------------------------------------ Keras


def all_layers(model):
    """Every layer inside `model`, depth first in model order, nested models'
    and layers' sublayers included, `model` itself excluded."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        raise _broken("all_layers", "keras.Layer._flatten_layers is gone")
    return list(flatten(include_self=False))


def loss_tracker(model):
    """The `Mean` metric a compiled Keras model logs as `loss`; a custom
    `train_step` that computes its own total loss updates it."""
    tracker = getattr(model, "_loss_tracker", None)
    if tracker is None or getattr(tracker, "name", None) != "loss":
        raise _broken("loss_tracker", "keras.Model._loss_tracker is not the "
                      "compiled model's `loss` metric")
    return tracker


# ------------------------------------------------------------- TensorFlow


def in_xla_context(graph):
    """Whether ops added to `graph` now are compiled by XLA (`jit_compile`)."""
    try:
        from tensorflow.python.ops import control_flow_util

        check = control_flow_util.GraphOrParentsInXlaContext
    except (ImportError, AttributeError) as error:
        raise _broken("in_xla_context", f"{error}") from None
    return check(graph)


def in_multi_worker_mode(strategy):
    """Whether `strategy` spans several workers (a cluster); `False` for a
    strategy without the notion."""
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check()) if check is not None else False


def tape_is_recording():
    """Whether an eager `tf.GradientTape` may record the next op (TensorFlow
    has no public API for this question; `True` when it cannot tell)."""
    try:
        from tensorflow.python.eager import record

        return bool(record.could_possibly_record())
    except (ImportError, AttributeError):
        return True


_SEED_STATE = ("_seed", "_rng")


@contextlib.contextmanager
def preserved_global_seed():
    """TensorFlow's global seed and its operation-seed stream, as they are on
    entry, given back on exit (`tf.random.set_seed` inside changes them only
    for the block). No public API reads them: they are the eager context's
    `_seed` and `_rng` attributes (absent until a seed is set)."""
    from tensorflow.python.eager import context

    ctx = context.context()
    missing = object()
    saved = {name: getattr(ctx, name, missing) for name in _SEED_STATE}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                if hasattr(ctx, name):
                    delattr(ctx, name)
            else:
                setattr(ctx, name, value)


# ----------------------------------------------------------------- LiteRT


def tflite_op_details(interpreter):
    """The op list of a LiteRT interpreter: dicts with `index`, `op_name`,
    `inputs` and `outputs` (the only op-level view LiteRT offers)."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        raise _broken("tflite_op_details", "Interpreter._get_ops_details is gone")
    return details()


def tflite_tensor_details(interpreter, index):
    """Details (`dtype`, ...) of any tensor of a LiteRT interpreter by index,
    intermediate tensors included (`get_tensor_details` lists only some)."""
    details = getattr(interpreter, "_get_tensor_details", None)
    if details is None:
        raise _broken("tflite_tensor_details", "Interpreter._get_tensor_details is gone")
    return details(index, 0)


# ---------------------------------------------- Keras multi-worker fit

_PATCHED = False


def patch_keras_multi_worker_fit():
    """Makes `model.fit` work under `MultiWorkerMirroredStrategy` (Keras 3.15).

    `fit` with two or more workers fails upstream (keras-team/keras#20585,
    #20329) in two places of `keras/src/backend/tensorflow/trainer.py`:

    1. `_maybe_symbolic_build` takes the first batch, a `PerReplica` value,
       and averages it across replicas with `strategy.reduce("MEAN", ...,
       axis=None)` before building the optimizer and metrics. With
       collective (multi-worker) all-reduce, eager `reduce` of that value
       fails: "Attempt to convert a value (PerReplica...) with an
       unsupported type ... to a Tensor". The build only needs the batch's
       structure, shapes and dtypes, not an average, so we give it this
       worker's first local replica batch instead (what Keras does anyway
       when the batch is not distributed).
    2. `reduce_per_replica` averages the per-replica metric results with
       `strategy.reduce("MEAN", v, axis=0)` in multi-worker mode. The
       results are scalars, so `axis=0` fails ("Invalid reduction dimension
       0 for input with 0 dimensions"). Its single-worker branch takes the
       mean over replicas (stack, then mean over the stacking axis); the
       multi-worker equivalent is `strategy.reduce("MEAN", v, axis=None)`,
       which is what we use. Gradients are untouched: they are all-reduced
       by the optimizer as usual, so training is exactly synchronous.

    Both patches apply only under a multi-worker collective strategy; every
    other strategy runs Keras's own code. The internals it replaces are
    checked first (`CompatibilityError` naming this shim if one is gone).
    `tests/test_training_distributed.py` checks that two worker processes
    train to the same weights as one process on the same global batches.
    Remove this when Keras fixes it.
    """
    global _PATCHED
    if _PATCHED:
        return
    tf_trainer = _multi_worker_internals()
    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    tf_trainer.reduce_per_replica = _multi_worker_reduce_per_replica(
        tf_trainer.reduce_per_replica, multi_worker)
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _multi_worker_symbolic_build(
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build, multi_worker)
    _PATCHED = True


def _multi_worker_reduce_per_replica(keras_reduce_per_replica, multi_worker):
    """Keras's `reduce_per_replica`, but a multi-worker mean over scalars
    (patch 2 of `patch_keras_multi_worker_fit`)."""
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return keras_reduce_per_replica(values, strategy, reduction)

    return reduce_per_replica


def _multi_worker_symbolic_build(keras_maybe_symbolic_build, multi_worker):
    """Keras's `_maybe_symbolic_build`, but built from this worker's first
    local batch (patch 1 of `patch_keras_multi_worker_fit`)."""
    import tensorflow as tf

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not multi_worker(strategy):
            return keras_maybe_symbolic_build(self, iterator, data_batch)
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v,
                next(batches),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    return maybe_symbolic_build


#: What the multi-worker patch replaces or calls, with the parameters it
#: passes (a renamed parameter would silently break the patched call).
_MULTI_WORKER_INTERNALS = {
    "reduce_per_replica": ("values", "strategy", "reduction"),
    "_collective_all_reduce_multi_worker": ("strategy",),
    "TensorFlowTrainer._maybe_symbolic_build": ("self", "iterator", "data_batch"),
    "TensorFlowTrainer._symbolic_build": ("self", "iterator", "data_batch"),
}


def _multi_worker_internals():
    """Keras's TensorFlow trainer module, after checking the names and
    parameters `patch_keras_multi_worker_fit` relies on."""
    import inspect

    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError as error:
        raise _broken("patch_keras_multi_worker_fit", str(error)) from None
    for dotted, parameters in _MULTI_WORKER_INTERNALS.items():
        target = tf_trainer
        for part in dotted.split("."):
            target = getattr(target, part, None)
        if target is None:
            raise _broken("patch_keras_multi_worker_fit",
                          f"keras.src.backend.tensorflow.trainer.{dotted} is gone")
        found = tuple(inspect.signature(target).parameters)
        if found[:len(parameters)] != parameters:
            raise _broken("patch_keras_multi_worker_fit",
                          f"keras.src.backend.tensorflow.trainer.{dotted} takes "
                          f"{found}, expected {parameters}")
    return tf_trainer


check_versions()
