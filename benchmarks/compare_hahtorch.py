"""Side by side: keras_hebb against the authors' PyTorch package (hahtorch).

    make bench-compare
    # or, with the comparison virtualenv in place:
    python -m benchmarks.compare_hahtorch [--batch 32] [--steps 3] [--warmup 1]
        [--torch-python .venv-bench-compare/bin/python]

Same shapes (CIFAR-10, 32x32x3), same batch, same optimizer (Adam 1e-3),
one run: the PyTorch side runs first in its own virtualenv (CPU torch wheel
and `hahtorch==0.0.5`, never installed into `.venv`), then the Keras side
in this process, each timing its HaH-VGG16 and its VGG16-BN training steps
in turns.

The authors' HaH training step, as in their training loop: a forward pass
whose HaH-block convolution outputs are captured with forward hooks (their
`ActivationExtractor` fails on torch 2), one retained backward per HaH
layer for `-alpha_l * HaHCost(conv output)` reaching only that layer's
weight (`inputs=[weight]`, the cheapest reading of their loop), a second
forward pass for cross-entropy, its backward, an Adam step. Their `VGG16`
class does not build (`blocks = +[...]` keeps only the last block), so the
baseline is assembled here from their `VGGBlock` (conv, ReLU, BatchNorm)
with the same widths.

The PyTorch side is this same file run with `--torch-worker`; it imports
only torch, hahtorch and numpy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

DEFAULT_TORCH_PYTHON = ".venv-bench-compare/bin/python"
PAPER_ALPHAS = (0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005)
VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_hahtorch",
        description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON,
                        help="python of the virtualenv with torch and hahtorch")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------ PyTorch side


def _interleaved(functions, steps, warmup):
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(steps):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def _torch_matmul_gflops():
    """PyTorch's float32 matmul speed (2048 x 2048), GFLOP/s: the machine's."""
    import torch

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    torch.mm(a, b)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        samples.append(time.perf_counter() - start)
    return 2 * 2048**3 / float(np.median(samples)) / 1e9


def _torch_vgg16_bn():
    """VGG16-BN of hahtorch's conv blocks (CIFAR-10 input normalization)."""
    import hahtorch
    import torch
    from hahtorch._models import VGGBlock

    layers, channels = [hahtorch.Normalize((0.4914, 0.4822, 0.4465),
                                           (0.2471, 0.2435, 0.2616))], 3
    for width in VGG16_WIDTHS:
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers.append(VGGBlock(channels, width, kernel_size=3, padding=1))
            channels = width
    layers += [torch.nn.Flatten(), torch.nn.Linear(512, 10)]
    return torch.nn.Sequential(*layers)


def torch_worker(batch, steps, warmup):
    """Times hahtorch's HaH-VGG16 and a VGG16-BN of its blocks; JSON line."""
    import hahtorch
    import torch

    torch.manual_seed(2022)
    matmul = _torch_matmul_gflops()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch, 3, 32, 32), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    cross_entropy = torch.nn.CrossEntropyLoss()

    hah = hahtorch.HaHVGG16()
    hah_convs = [m.conv_layer for m in hah.modules() if isinstance(m, hahtorch.HaHBlock)]
    captured = {}
    for index, conv in enumerate(hah_convs):
        conv.register_forward_hook(
            lambda module, inputs, output, i=index: captured.__setitem__(i, output))
    costs = [hahtorch.HaHCost(ratio=0.1, demote=1.0) for _ in hah_convs]
    hah_optimizer = torch.optim.Adam(hah.parameters(), lr=1e-3)

    def hah_step():
        hah_optimizer.zero_grad()
        hah(x)  # forward for the costs (hooks capture the conv outputs)
        for i, (conv, cost, alpha) in enumerate(zip(hah_convs, costs, PAPER_ALPHAS)):
            loss = -alpha * cost(captured[i])
            loss.backward(retain_graph=True, inputs=[conv.weight])
        loss = cross_entropy(hah(x), y)  # second forward for cross-entropy
        loss.backward()
        hah_optimizer.step()

    standard = _torch_vgg16_bn()
    standard_optimizer = torch.optim.Adam(standard.parameters(), lr=1e-3)

    def standard_step():
        standard_optimizer.zero_grad()
        cross_entropy(standard(x), y).backward()
        standard_optimizer.step()

    ms = _interleaved({"hah": hah_step, "standard": standard_step}, steps, warmup)
    return {"hah_ms": ms["hah"], "standard_ms": ms["standard"], "matmul_gflops": matmul,
            "torch": torch.__version__, "hahtorch": hahtorch.__version__,
            "threads": torch.get_num_threads(), "hah_layers": len(hah_convs)}


# -------------------------------------------------------------- Keras side


def keras_side(batch, steps, warmup):
    from export.cli import set_tf_environment_defaults

    set_tf_environment_defaults()  # before TensorFlow is imported
    import keras

    from benchmarks import common
    from keras_hebb import architectures

    matmul = common.matmul_gflops()
    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    models = {}
    for name in ("hah_vgg16", "vgg16_bn"):
        keras.utils.set_random_seed(2022)
        model = architectures.PRESETS[name]()
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[name] = model
    times = common.interleaved(
        {name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()},
        steps, warmup)
    return {"hah_ms": common.median_ms(times["hah_vgg16"]["wall"]),
            "standard_ms": common.median_ms(times["vgg16_bn"]["wall"]),
            "matmul_gflops": matmul, "keras": keras.__version__,
            "onednn": common.onednn_enabled()}


def report(batch, theirs, ours):
    from benchmarks import common

    rows = [
        [f"hahtorch {theirs['hahtorch']} (torch {theirs['torch']}): HaH-VGG16, their loop",
         theirs["hah_ms"], batch / theirs["hah_ms"] * 1e3],
        ["hahtorch blocks: VGG16-BN", theirs["standard_ms"], batch / theirs["standard_ms"] * 1e3],
        [f"keras_hebb (Keras {ours['keras']}): hah_vgg16", ours["hah_ms"],
         batch / ours["hah_ms"] * 1e3],
        ["keras_hebb: vgg16_bn", ours["standard_ms"], batch / ours["standard_ms"] * 1e3],
    ]
    lines = [common.markdown_table(["what (batch %d)" % batch, "ms/step", "img/s"], rows)]
    lines.append(
        f"matmul 2048^2 float32: torch {theirs['matmul_gflops']:.0f} GFLOP/s, "
        f"TensorFlow {ours['matmul_gflops']:.0f} GFLOP/s")
    lines.append(
        f"HaH/standard time: authors {theirs['hah_ms'] / theirs['standard_ms']:.2f}x, "
        f"keras_hebb {ours['hah_ms'] / ours['standard_ms']:.2f}x")
    lines.append(
        f"keras_hebb HaH-VGG16 throughput / authors': "
        f"{theirs['hah_ms'] / ours['hah_ms']:.2f}x (goal >= 2x)")
    return "\n\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        print(f"compare_hahtorch: expected --batch >= 1, --steps >= 1, --warmup >= 0; "
              f"received {args.batch}, {args.steps}, {args.warmup}", file=sys.stderr)
        return 2
    if args.torch_worker:
        print(json.dumps(torch_worker(args.batch, args.steps, args.warmup)))
        return 0
    if not os.path.exists(args.torch_python):
        print(f"compare_hahtorch: no PyTorch virtualenv at {args.torch_python}; "
              "create it with `make bench-compare` (or pass --torch-python).",
              file=sys.stderr)
        return 2
    from benchmarks import common

    machine = common.machine_description()
    worker = subprocess.run(
        [args.torch_python, "-m", "benchmarks.compare_hahtorch", "--torch-worker",
         "--batch", str(args.batch), "--steps", str(args.steps),
         "--warmup", str(args.warmup)],
        capture_output=True, text=True, check=False)
    if worker.returncode != 0:
        print(worker.stderr[-3000:], file=sys.stderr)
        print(f"compare_hahtorch: the PyTorch side failed (status {worker.returncode})",
              file=sys.stderr)
        return 1
    theirs = json.loads(worker.stdout.strip().splitlines()[-1])
    ours = keras_side(args.batch, args.steps, args.warmup)
    common.print_header(machine, "benchmarks.compare_hahtorch", argv,
                        f"oneDNN {'on' if ours['onednn'] else 'off'}; "
                        f"torch threads {theirs['threads']}")
    print(report(args.batch, theirs, ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
