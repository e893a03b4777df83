"""Training-step throughput of HaH networks against their standard baselines.

    python -m benchmarks.train_step [--pairs vgg16,small] [--batch-sizes 32,128]
        [--steps 5] [--warmup 2] [--onednn both|on|off|current] [--no-memory]

For each pair (`hah_vgg16` / `vgg16_bn` on CIFAR-10 shapes, `hah_vgg_small`
/ `vgg_small_bn` on Fashion-MNIST shapes) and batch size, one process per
oneDNN setting builds both models, compiles them as a user would (Adam
1e-3, sparse cross-entropy, `jit_compile="auto"`, i.e. no XLA on CPU) and
times `train_on_batch` in turns (HaH, standard, HaH, ...), so that other
load on the machine hits both alike. It prints ms/step (median), img/s,
the HaH/standard time ratio, the achieved GFLOP/s (3x the forward conv and
dense multiply-adds per image) and that figure over the float32 matmul
GFLOP/s measured in the same process, and the peak memory of a step (a
separate process per model: peak RSS minus the RSS before the model was
built).
"""

import argparse
import json
import sys

from benchmarks import common

PAIRS = {
    "vgg16": ("hah_vgg16", "vgg16_bn", (32, 32, 3)),
    "small": ("hah_vgg_small", "vgg_small_bn", (28, 28, 1)),
}


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive ints, received {text!r}")
    return values


def _pair_list(text):
    names = [v for v in text.split(",") if v]
    unknown = [n for n in names if n not in PAIRS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {sorted(PAIRS)}, received {text!r}")
    return names


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=_pair_list, default=["vgg16", "small"])
    parser.add_argument("--batch-sizes", type=_int_list, default=[32, 128])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--onednn", choices=["both", "on", "off", "current"],
                        default="both",
                        help="TF_ENABLE_ONEDNN_OPTS setting(s); 'current' runs "
                             "in this process with the environment as it is")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory processes")
    parser.add_argument("--plain-hah", action="store_true",
                        help="HaH blocks train through the plain layers (autodiff), "
                        "not keras_hebb._fused: the before/after of that change")
    parser.add_argument("--matmul-size", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return parser


def _data(shape, batch, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.random((batch, *shape), dtype=np.float32),
            rng.integers(0, 10, batch).astype("int64"))


PLAIN_HAH = False  # --plain-hah


def _compiled(name, shape):
    import keras

    from keras_hebb import architectures

    keras.utils.set_random_seed(2022)
    options = {}
    if name.startswith("hah"):
        options["block_options"] = {"use_fused_training": not PLAIN_HAH}
    model = architectures.PRESETS[name](input_shape=shape, **options)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def measure(pairs, batch_sizes, steps, warmup, matmul_size=2048):
    """Times the pairs in this process; returns a list of result dicts."""
    matmul = common.matmul_gflops(matmul_size)
    results = []
    for pair in pairs:
        hah_name, standard_name, shape = PAIRS[pair]
        for batch in batch_sizes:
            x, y = _data(shape, batch)
            models = {name: _compiled(name, shape) for name in (hah_name, standard_name)}
            times = common.interleaved(
                {name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()},
                steps, warmup)
            for name, model in models.items():
                ms = common.median_ms(times[name]["wall"])
                flops = common.training_flops_per_image(model) * batch
                results.append({
                    "model": name, "pair": pair, "batch": batch,
                    "onednn": common.onednn_enabled(),
                    "ms": ms, "cpu_ms": common.median_ms(times[name]["cpu"]),
                    "min_ms": min(times[name]["wall"]) * 1e3,
                    "img_s": batch / ms * 1e3,
                    "gflops": flops / ms / 1e6,
                    "matmul_gflops": matmul, "matmul_size": matmul_size,
                })
            hah, standard = results[-2], results[-1]
            hah["ratio"] = hah["ms"] / standard["ms"]
            hah["cpu_ratio"] = hah["cpu_ms"] / standard["cpu_ms"]
    return results


def measure_memory(name, batch, steps=3):
    """Peak RSS of training steps above the RSS before the model existed."""
    pair = next(p for p, (h, s, _) in PAIRS.items() if name in (h, s))
    shape = PAIRS[pair][2]
    import tensorflow as tf  # noqa: F401  (import cost outside the baseline)

    x, y = _data(shape, batch)
    baseline = common.current_rss_mb()
    model = _compiled(name, shape)
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {"model": name, "batch": batch, "peak_mb": common.peak_rss_mb() - baseline}


def _worker_results(args, onednn):
    argv = ["--json", "--onednn", "current", "--no-memory", *(["--plain-hah"] if PLAIN_HAH else []),
            "--pairs", ",".join(args.pairs),
            "--batch-sizes", ",".join(map(str, args.batch_sizes)),
            "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out = common.run_python("benchmarks.train_step", argv, onednn=onednn)
    return json.loads(out.strip().splitlines()[-1])


def _memory_results(args):
    results = []
    for pair in args.pairs:
        for name in PAIRS[pair][:2]:
            for batch in args.batch_sizes:
                out = common.run_python(
                    "benchmarks.train_step",
                    ["--json", "--memory-of", name, "--batch", str(batch),
                     *(["--plain-hah"] if PLAIN_HAH else [])])
                results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def report(results, memory):
    """The printed tables (markdown) and the goal lines."""
    lines = []
    rows = []
    for r in results:
        rows.append([
            r["model"], r["batch"], "on" if r["onednn"] else "off",
            r["ms"], r["img_s"], r.get("ratio", ""), r.get("cpu_ratio", ""),
            r["gflops"], f"{100 * r['gflops'] / r['matmul_gflops']:.0f}%",
        ])
    lines.append(common.markdown_table(
        ["model", "batch", "oneDNN", "ms/step", "img/s", "HaH/std time",
         "HaH/std CPU", "GFLOP/s", "of matmul"], rows))
    matmuls = sorted({(r["onednn"], r["matmul_gflops"]) for r in results})
    size = results[0]["matmul_size"] if results else 2048
    lines.append(f"matmul {size}^2 float32: " + ", ".join(
        f"{g:.0f} GFLOP/s (oneDNN {'on' if o else 'off'})" for o, g in matmuls))
    if memory:
        by = {(m["model"], m["batch"]): m["peak_mb"] for m in memory}
        rows = []
        for pair, (hah, standard, _) in PAIRS.items():
            for batch in sorted({m["batch"] for m in memory}):
                if (hah, batch) in by and (standard, batch) in by:
                    rows.append([hah, standard, batch, by[(hah, batch)],
                                 by[(standard, batch)],
                                 by[(hah, batch)] / by[(standard, batch)]])
        lines.append(common.markdown_table(
            ["HaH model", "standard", "batch", "HaH peak MiB", "std peak MiB",
             "ratio"], rows))
    return "\n\n".join(lines)


def main(argv=None):
    global PLAIN_HAH
    args = build_parser().parse_args(argv)
    PLAIN_HAH = args.plain_hah
    if args.steps < 1 or args.warmup < 0:
        print(f"train_step: expected --steps >= 1 and --warmup >= 0, received "
              f"{args.steps} and {args.warmup}", file=sys.stderr)
        return 2
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.batch)))
        return 0
    machine = common.machine_description()
    if args.onednn == "current":
        results = measure(args.pairs, args.batch_sizes, args.steps, args.warmup,
                          args.matmul_size)
        if args.json:
            print(json.dumps(results))
            return 0
    else:
        settings = {"both": [True, False], "on": [True], "off": [False]}[args.onednn]
        results = []
        for onednn in settings:
            results += _worker_results(args, onednn)
    memory = [] if args.no_memory else _memory_results(args)
    common.print_header(machine, "benchmarks.train_step", argv)
    print(report(results, memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
