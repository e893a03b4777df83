"""The `tf.distribute` strategy of a run.

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
the global batch. Keras 3.15's `fit` fails with several workers; the
multi-worker strategy comes with keras_hebb's fix of it (`keras_hebb.runtime`).
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
        from keras_hebb import runtime

        runtime.patch_keras_multi_worker_fit()
        return strategy
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local")
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            from export.cli import first_line

            raise StrategyError(
                f"strategy tpu: no TPU could be initialized ({first_line(error)})."
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"Unknown strategy {name!r}.")


def is_chief(strategy):
    """Whether this process writes the run's files (task 0, or no cluster)."""
    from keras_hebb import runtime

    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not runtime.in_multi_worker_mode(strategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
