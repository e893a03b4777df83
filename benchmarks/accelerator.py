"""Training throughput of the paper's networks on the device TensorFlow sees.

    python -m benchmarks.accelerator [--steps 10] [--warmup 1] [--batch 128]
        [--xla | --no-xla] [--mixed-precision | --no-mixed-precision]
        [--strategy auto] [--preset vgg16|small]

Trains HaH-VGG16 (`hah_vgg16`) and VGG16-BN (`vgg16_bn`) from
`keras_hebb.architectures` as a user would (Adam 1e-3, sparse cross-entropy,
`model.train_on_batch`) on CIFAR-shaped data: the 20 real CIFAR-10 images
of the `cifar10_sample` dataset tiled to the batch (random images if they
are not installed). On a GPU or TPU XLA (`jit_compile=True`) and mixed
precision (`mixed_float16`; `mixed_bfloat16` on a TPU) are on by default,
on a CPU both are off (the flags override either). The strategy is the
training program's (`training/distribute.py`): `TPUStrategy` when a TPU is
configured, `MirroredStrategy` over several GPUs, else the default; the
batch is the global batch.

Each model's first step (tracing, and XLA compilation with `--xla`) and
`--warmup` more steps run untimed; then `--steps` steps of each are timed
in turns (HaH, standard, HaH, ...). Prints the device, whether XLA and
mixed precision were used, each model's median step time (wall, and the
process's CPU time, which other load on a CPU disturbs less), img/s, the
time of its first step, its last loss and HaH cost, the HaH/standard step
time ratio and the peak memory: on a GPU or TPU the device's peak during
each model's first steps above what it held before them
(`tf.config.experimental.get_memory_info`); on a CPU the process's peak
resident memory (both models and TensorFlow together).

Exits with status 1 if a step fails or a loss is not finite, 2 for bad
arguments.
"""

import argparse
import math
import sys
import time

from benchmarks import common

PRESETS = {
    "vgg16": ("hah_vgg16", "vgg16_bn"),
    "small": ("hah_vgg_small", "vgg_small_bn"),
}
SHAPE = (32, 32, 3)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps per model after the first one")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the train steps with XLA (default: on with a GPU or TPU)")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="mixed_float16 (mixed_bfloat16 on a TPU) (default: on with "
                             "a GPU or TPU)")
    parser.add_argument("--strategy", default="auto",
                        help="auto (default), default, mirrored, multi_worker or tpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="vgg16",
                        help="vgg16: the paper's networks (default); small: the CPU-sized "
                             "pair, for quick checks")
    return parser


def _check_arguments(args):
    """A one-line problem with the arguments, or `None`."""
    if args.steps < 1 or args.warmup < 0:
        return (f"expected --steps >= 1 and --warmup >= 0, received {args.steps} "
                f"and {args.warmup}")
    if args.batch < 1:
        return f"expected --batch >= 1, received {args.batch}"
    return None


def _images(batch):
    """`(images, labels, source)`: the real CIFAR-10 sample tiled to `batch`."""
    import numpy as np

    from keras_hebb import data

    try:
        x, y = data.load_arrays("cifar10_sample", "test")
        source = f"the {len(x)} real CIFAR-10 images of cifar10_sample, tiled"
    except (data.DatasetUnavailableError, OSError, ImportError) as error:
        rng = np.random.default_rng(0)
        x = rng.random((batch, *SHAPE), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        source = f"random images (cifar10_sample unavailable: {error})"
    repeats = -(-batch // len(x))
    return (np.concatenate([x] * repeats)[:batch],
            np.concatenate([y] * repeats)[:batch].astype("int64"), source)


def _device():
    """`(kind, description, memory device name)` of the device TF trains on."""
    import tensorflow as tf

    from training import distribute

    if distribute.tpu_configured():
        return "TPU", "TPU", "TPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "GPU")
        return "GPU", f"{len(gpus)} x {name}" if len(gpus) > 1 else name, "GPU:0"
    return "CPU", f"CPU ({common.machine_description().split(', load')[0]})", None


def _memory(device):
    """Bytes in use and peak on `device` (`None` where not supported)."""
    import tensorflow as tf

    if device is None:
        return None
    try:
        return tf.config.experimental.get_memory_info(device)
    except (ValueError, tf.errors.OpError):
        return None


def _compiled(name, xla):
    import keras

    from keras_hebb import architectures

    keras.utils.set_random_seed(2022)
    model = architectures.PRESETS[name](input_shape=SHAPE)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=xla)
    return model


class StepFailed(RuntimeError):
    """A training step raised or returned a loss that is not finite."""


def _step(model, x, y):
    try:
        logs = model.train_on_batch(x, y, return_dict=True)
    except Exception as error:  # noqa: BLE001 (reported, then exit 1)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StepFailed(f"{model.name}: a training step failed: "
                         f"{type(error).__name__}: {first[:300]}") from error
    bad = {k: v for k, v in logs.items() if not math.isfinite(float(v))}
    if bad:
        raise StepFailed(f"{model.name}: not finite after a step: {bad}")
    return logs


def measure(args, kind, memory_device):
    """Builds, warms up and times both models; returns one dict per model."""
    import tensorflow as tf

    from training import distribute

    x, y, source = _images(args.batch)
    x, y = tf.constant(x), tf.constant(y)
    strategy_name = distribute.choose_strategy_name(args.strategy)
    strategy = distribute.make_strategy(strategy_name)
    results = {}
    with strategy.scope():
        for name in PRESETS[args.preset]:
            model = _compiled(name, args.xla)
            memory = _memory(memory_device)
            if memory is not None:
                try:
                    tf.config.experimental.reset_memory_stats(memory_device)
                except (ValueError, tf.errors.OpError):
                    memory = None  # a peak since the start would be the other model's
            start = time.perf_counter()
            logs = _step(model, x, y)
            first = time.perf_counter() - start
            for _ in range(args.warmup):
                logs = _step(model, x, y)
            peak = None
            if memory is not None:
                peak = (_memory(memory_device)["peak"] - memory["current"]) / 2**20
            results[name] = {"model": model, "first_s": first, "peak_mb": peak,
                             "logs": logs, "jit_compile": model.jit_compile}
    last = {}

    def timed(name):
        def run():
            last[name] = _step(results[name]["model"], x, y)
        return run

    times = common.interleaved({name: timed(name) for name in results}, args.steps,
                               warmup=0)
    for name, result in results.items():
        ms = common.median_ms(times[name]["wall"])
        result.update(ms=ms, cpu_ms=common.median_ms(times[name]["cpu"]),
                      img_s=args.batch / ms * 1e3, logs=last[name])
    return results, source, strategy_name, strategy.num_replicas_in_sync


def report(args, results, kind, device, policy, strategy_name, replicas, source):
    """The printed lines: conditions, the table and the figures."""
    from keras_hebb import _selection

    hah, standard = PRESETS[args.preset]
    native = (not args.xla and kind == "CPU" and _selection.native_ops() is not None)
    lines = [
        f"Device: {device}",
        f"Strategy: {strategy_name} ({replicas} replica{'s' if replicas > 1 else ''})",
        "XLA (jit_compile): " + (
            "on (a TPU compiles every step with XLA)" if kind == "TPU"
            else "on" if all(r["jit_compile"] for r in results.values()) else "off"),
        f"Mixed precision: {policy if policy != 'float32' else 'off (float32)'}",
        f"keras_hebb native CPU ops: {'used' if native else 'not used'}",
        f"Data: {source}; batch {args.batch}, {args.warmup} warm-up and "
        f"{args.steps} timed steps per model after the first",
        "",
    ]
    rows = []
    for name, r in results.items():
        peak = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        hah_cost = r["logs"].get("hah_cost")
        rows.append([name, args.batch, r["ms"], r["cpu_ms"], r["img_s"], r["first_s"], peak,
                     f"{float(r['logs']['loss']):.3f}",
                     "" if hah_cost is None else f"{float(hah_cost):.4f}"])
    lines.append(common.markdown_table(
        ["model", "batch", "ms/step", "CPU ms/step", "img/s", "first step s", "peak MiB",
         "last loss", "hah_cost"], rows))
    lines.append("")
    ratio = results[hah]["ms"] / results[standard]["ms"]
    lines.append(f"HaH/standard step time: {ratio:.2f}x ({hah} / {standard})")
    if kind == "CPU":
        lines.append(f"Peak memory: n/a per model on a CPU; process peak RSS "
                     f"{common.peak_rss_mb():.0f} MiB (both models and TensorFlow)")
    else:
        peaks = [results[n]["peak_mb"] for n in (hah, standard)]
        if None in peaks:
            lines.append(f"Peak memory: n/a ({kind} memory statistics unavailable)")
        else:
            lines.append(f"Peak {kind} memory above the weights, first steps: "
                         f"{peaks[0]:.0f} MiB / {peaks[1]:.0f} MiB = "
                         f"{peaks[0] / peaks[1]:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = _check_arguments(args)
    if problem:
        print(f"accelerator: {problem}", file=sys.stderr)
        return 2
    from export.cli import set_tf_environment_defaults

    set_tf_environment_defaults()  # before TensorFlow is imported
    machine = common.machine_description()
    import keras

    from training import distribute

    try:
        kind, device, memory_device = _device()
        if args.xla is None:
            args.xla = kind != "CPU"
        if args.mixed_precision is None:
            args.mixed_precision = kind != "CPU"
        policy = "float32"
        if args.mixed_precision:
            policy = "mixed_bfloat16" if kind == "TPU" else "mixed_float16"
        keras.mixed_precision.set_global_policy(policy)
        results, source, strategy_name, replicas = measure(args, kind, memory_device)
    except distribute.StrategyError as error:
        print(f"accelerator: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"accelerator: {error}", file=sys.stderr)
        return 1
    finally:
        keras.mixed_precision.set_global_policy("float32")
    common.print_header(machine, "benchmarks.accelerator", argv,
                        f"oneDNN {'on' if common.onednn_enabled() else 'off'}")
    print(report(args, results, kind, device, policy, strategy_name, replicas, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
