"""The `tf.distribute` strategy of a run, and a fix for Keras multi-worker fit.

`strategy: auto` picks, in order: `TPUStrategy` when a TPU is configured
(`TPU_NAME` set, or a TPU VM's `/dev/accel*` devices), the
`MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than one task in
its cluster, `MirroredStrategy` when there are several GPUs, else the
default strategy. `default`, `mirrored`, `multi_worker` and `tpu` force
one.

The config's `batch_size` is the GLOBAL batch: under N replicas each one
gets `batch_size / N` examples, Keras divides the compiled loss by N and
`HebbianModel` does the same for its HaH term, so the summed gradient is
the gradient of the mean loss over the global batch, exactly as on one
device. The learning rate therefore needs no scaling; it is the rate for
the global batch.
"""

import glob
import json
import os

STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(RuntimeError):
    """The requested strategy cannot run here (one sentence)."""


def tf_config_tasks(environ=None):
    """Number of tasks in `TF_CONFIG`'s cluster (0 when unset), and its task."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "")
    if not text.strip():
        return 0, None
    try:
        tf_config = json.loads(text)
        cluster = tf_config.get("cluster", {})
        tasks = sum(len(cluster[job]) for job in cluster
                    if job in ("chief", "worker"))
        return tasks, tf_config.get("task")
    except (ValueError, TypeError, AttributeError):
        raise StrategyError(
            f"TF_CONFIG is not valid JSON with a 'cluster' mapping: {text[:80]!r}."
        ) from None


def tpu_configured(environ=None):
    """Whether this machine looks like it has or names a TPU."""
    environ = environ if environ is not None else os.environ
    return bool(environ.get("TPU_NAME")) or bool(glob.glob("/dev/accel[0-9]*"))


def choose_strategy_name(requested, environ=None, gpus=None):
    """Which strategy `requested` ("auto" or a name) resolves to here.

    Args:
        requested: `"auto"` or one of `STRATEGY_NAMES`.
        environ: environment mapping. Defaults to `os.environ`.
        gpus: number of GPUs; `None` asks TensorFlow.
    """
    if requested != "auto":
        if requested not in STRATEGY_NAMES:
            raise StrategyError(
                f"Unknown strategy {requested!r}: expected 'auto' or one of "
                f"{list(STRATEGY_NAMES)}."
            )
        return requested
    if tpu_configured(environ):
        return "tpu"
    if tf_config_tasks(environ)[0] > 1:
        return "multi_worker"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "default"


def make_strategy(name):
    """A `tf.distribute.Strategy` for a name from `choose_strategy_name`."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if tf_config_tasks()[0] < 1:
            raise StrategyError(
                "strategy multi_worker needs TF_CONFIG naming the cluster and "
                "this task, e.g. {\"cluster\": {\"worker\": [\"host1:port\", "
                "\"host2:port\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}."
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_multi_worker_fit()
        return strategy
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local")
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise StrategyError(
                f"strategy tpu: no TPU could be initialized "
                f"({str(error).splitlines()[0] if str(error) else type(error).__name__})."
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"Unknown strategy {name!r}.")


def is_chief(strategy):
    """Whether this process writes the run's files (task 0, or no cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode",
                                       lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


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
    other strategy runs Keras's own code. `tests/test_training_distributed.py`
    checks that two worker processes train to the same weights as one
    process on the same global batches. Remove this when Keras fixes it.
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    keras_reduce_per_replica = tf_trainer.reduce_per_replica
    keras_maybe_symbolic_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return keras_reduce_per_replica(values, strategy, reduction)

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

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED = True
