"""Training-step time of `hah_vgg_small` on each Keras backend.

    python -m benchmarks.backends [--backends tensorflow,jax] [--batch-size 128]
        [--steps 10] [--warmup 2] [--rounds 2] [--model hah_vgg_small,vgg_small_bn]

Keras fixes its backend once per process, so each backend trains in its
own process (`KERAS_BACKEND` set): `hah_vgg_small` (or another preset of
`keras_hebb.architectures`, `--model`, e.g. its standard counterpart
`vgg_small_bn`) on Fashion-MNIST-shaped
random images, compiled as a user would (Adam 1e-3, sparse cross-entropy,
`jit_compile="auto"`: no XLA for TensorFlow on CPU, the jitted step on
JAX), timed with `train_on_batch` after `--warmup` steps (the first one
traces or compiles; its time is printed apart). The backends run in turns,
`--rounds` times (TF, JAX, TF, JAX, ...), so that other load on the machine
hits both alike; the table gives each backend's median over its rounds,
the process CPU time per step and the ratio to TensorFlow. With several
models (`--model a,b`, interleaved in the same turns) it also gives each
model's CPU time per step as a ratio to the first model's on the same
backend: `hah_vgg_small,vgg_small_bn` is the HaH network's cost over its
standard counterpart.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import common

BACKENDS = ("tensorflow", "jax")


def _worker(model_name, batch_size, steps, warmup):
    """Times the steps in this process; prints one JSON line."""
    import keras
    import numpy as np

    from keras_hebb import architectures

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch_size, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, batch_size)
    keras.utils.set_random_seed(0)
    model = architectures.PRESETS[model_name]()
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.train_on_batch(images, labels)
    first_s = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        model.train_on_batch(images, labels)
    wall, cpu = [], []
    for _ in range(steps):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        logs = model.train_on_batch(images, labels, return_dict=True)
        np.asarray(logs["loss"])  # the step has finished
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    print(json.dumps({"backend": keras.backend.backend(), "first_s": first_s,
                      "ms": common.median_ms(wall), "cpu_ms": common.median_ms(cpu)}))


def _run_backend(backend, model, args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    command = [sys.executable, "-m", "benchmarks.backends", "--worker", "--model", model,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} run failed (status {result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="hah_vgg_small",
                        help="presets of keras_hebb.architectures, comma-separated "
                             "(default: hah_vgg_small)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.model, args.batch_size, args.steps, args.warmup)
        return 0
    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: expected a comma-separated subset of {list(BACKENDS)}. "
                     f"Received: {args.backends!r}")
    machine = common.machine_description()
    common.print_header(machine, "benchmarks.backends", argv,
                        f"oneDNN {'on' if os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1') == '1' else 'off'}")
    models = [m for m in args.model.split(",") if m]
    runs = {(b, m): [] for b in backends for m in models}
    for _ in range(args.rounds):
        for backend in backends:
            for model in models:
                runs[backend, model].append(_run_backend(backend, model, args))
    import numpy as np

    def median(backend, model, key):
        return float(np.median([r[key] for r in runs[backend, model]]))

    rows = []
    for model in models:
        for backend in backends:
            ms, cpu = median(backend, model, "ms"), median(backend, model, "cpu_ms")
            rows.append([backend, model, args.batch_size, ms, cpu,
                         args.batch_size * 1000.0 / ms,
                         f"{cpu / median(backends[0], model, 'cpu_ms'):.2f}x",
                         f"{cpu / median(backend, models[0], 'cpu_ms'):.2f}x",
                         " / ".join(f"{r['first_s']:.1f}" for r in runs[backend, model])])
    print(common.markdown_table(
        ["backend", "model", "batch", "ms/step", "CPU ms/step", "img/s",
         f"CPU vs {backends[0]}", f"CPU vs {models[0]}", "first step s (per round)"], rows))
    return 0

if __name__ == "__main__":
    sys.exit(main())
