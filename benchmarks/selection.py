"""The selections and the HaH cost of HaH-VGG16's six HaH blocks, three ways.

    python -m benchmarks.selection [--batch 128] [--steps 5] [--warmup 1]

For each block shape at the given batch: the threshold's k-th value over
H*W per image and channel (k = 20%) and the HaH cost's K-th value over the
channels (K = 10%), each by keras_hebb's native op, by TensorFlow's
`NthElement` (the fallback; the threshold after a transpose) and by
`top_k` (the portable path); and the fused path's HaH cost forward +
backward with the native ops and with TensorFlow ops. Graph mode, the
calls timed in turns, median ms and the ratio to the native op.
"""

import argparse
import contextlib
import sys

from benchmarks import common

# (H, C) of HaH-VGG16's HaH blocks on 32x32 images.
BLOCKS = [(32, 64), (32, 64), (16, 128), (16, 128), (8, 256), (8, 256)]
WAYS = ("native", "NthElement", "top_k")


def _cases(batch):
    import numpy as np
    import tensorflow as tf

    from keras_hebb import _context, _fused, _native, _selection
    from keras_hebb.hah_cost import winner_count

    rng = np.random.default_rng(0)
    for height, channels in sorted(set(BLOCKS)):
        shape = (batch, height, height, channels)
        relu = tf.constant(np.maximum(rng.standard_normal(shape), 0).astype("float32"))
        z = tf.constant(rng.standard_normal(shape).astype("float32"))
        rank = height * height - int(0.8 * height * height) + 1
        winners = winner_count(channels, 0.1)
        lose = 1.0 / (channels - winners)

        def transposed(x):
            return tf.transpose(tf.reshape(x, (batch, -1, channels)), (0, 2, 1))

        def cost_step(x, native):  # the fused path's cost, forward + backward
            with contextlib.nullcontext() if native else _context.without_native():
                cost, kth = _fused.cost_forward(x, winners, lose, native)
                return cost, _fused.cost_gradient(x, kth, winners, lose, tf.constant(1.0),
                                                  native)

        name = f"{height}x{height}x{channels}"
        yield f"threshold {name}, k={rank} of {height * height}", relu, {
            "native": lambda x: _native.kth_largest(x, rank, spatial=True),
            "NthElement": lambda x: tf.raw_ops.NthElement(
                input=transposed(x), n=rank - 1, reverse=True),
            "top_k": lambda x: _selection.kth_largest(transposed(x), rank, fast=False),
        }
        yield f"cost selection {name}, K={winners} of {channels}", z, {
            "native": lambda x: _native.kth_largest(x, winners),
            "NthElement": lambda x: tf.raw_ops.NthElement(input=x, n=winners - 1, reverse=True),
            "top_k": lambda x: _selection.kth_largest(x, winners, fast=False),
        }
        yield f"cost fwd+bwd {name}", z, {
            "native": lambda x: cost_step(x, True),
            "NthElement": lambda x: cost_step(x, False),
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        print("error: needs --batch >= 1, --steps >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    machine = common.machine_description()
    if "tensorflow" not in sys.modules:
        common.set_onednn(True)
    import tensorflow as tf

    from keras_hebb import _native

    if _native.library() is None:
        print("error: the native ops are not built: run `make setup` "
              "(python -m keras_hebb._native)", file=sys.stderr)
        return 2
    rows = []
    for label, x, functions in _cases(args.batch):
        graphs = {key: tf.function(fn) for key, fn in functions.items()}
        times = common.interleaved(
            {key: (lambda g=g: tf.nest.map_structure(lambda t: t.numpy(), g(x)))
             for key, g in graphs.items()},
            args.steps, args.warmup)
        ms = {key: common.median_ms(t["wall"]) for key, t in times.items()}
        rows.append([label] + [f"{ms[key]:.2f}" if key in ms else "" for key in WAYS]
                    + [f"{ms[key] / ms['native']:.2f}x" if key in ms else ""
                       for key in WAYS[1:]])
    common.print_header(machine, "benchmarks.selection", argv,
                        f"oneDNN {'on' if common.onednn_enabled() else 'off'}")
    print(common.markdown_table(
        ["what"] + [f"{key} ms" for key in WAYS]
        + [f"{key} / native" for key in WAYS[1:]], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
