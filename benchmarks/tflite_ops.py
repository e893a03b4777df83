"""Where the TFLite time of a HaH block goes: its inference ops, piece by piece.

    python -m benchmarks.tflite_ops [--height 32] [--channels 64]
        [--threads 2] [--repeats 200]

The LiteRT Python interpreter has no per-op profiler (and the LiteRT
`benchmark_model` tool is not installed here), so this program converts
growing prefixes of the inference graph of a HaH block's normalization and
threshold, on a `(1, H, H, C)` ReLU output, to float32 and to full-integer
int8 TFLite files and times each (`ai_edge_litert`, XNNPACK, median of
`--repeats` calls at batch 1). The differences between rows are the cost
of the ops added. The ops are the ones `DivisiveNormalization` and
`FractionalThreshold` trace for export (the `top_k` path), plus the
broadcast division they used before: a reference-kernel DIV in int8.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

from benchmarks import common


def _pieces(height, channels, sigma=0.1, ratio=0.2):
    import tensorflow as tf

    positions = height * height
    rank = positions - math.floor(round((1.0 - ratio) * positions, 6)) + 1

    def field(a):
        return tf.reduce_mean(tf.nn.max_pool2d(a, 3, 1, "SAME"), -1, keepdims=True)

    def denominator(a):
        f = field(a)
        return sigma * tf.reduce_max(f, (1, 2), keepdims=True) + (1.0 - sigma) * f + 1e-7

    def normalized(a):  # as shipped: times the reciprocal
        return a * (1.0 / denominator(a))

    def kth(u):
        flat = tf.transpose(tf.reshape(u, (1, positions, channels)), (0, 2, 1))
        top, _ = tf.math.top_k(flat, rank, sorted=False)
        return tf.reshape(tf.reduce_min(top, -1), (1, 1, 1, channels))

    def threshold(u):
        return tf.where(u > kth(u), u, 0.0)

    return {
        "max pool": lambda a: tf.nn.max_pool2d(a, 3, 1, "SAME"),
        "+ channel mean (field)": field,
        "+ peak, denominator": denominator,
        "divisive normalization, broadcast DIV (before)": lambda a: a / denominator(a),
        "divisive normalization, reciprocal MUL (shipped)": normalized,
        "DN + transpose": lambda a: tf.transpose(
            tf.reshape(normalized(a), (1, positions, channels)), (0, 2, 1)),
        "DN + k-th value (TOPK_V2)": lambda a: kth(normalized(a)),
        "DN + threshold (shipped block)": lambda a: threshold(normalized(a)),
    }


def _convert(fn, shape, int8, calibration):
    import tensorflow as tf

    function = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()])
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                    for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _latency_ms(content, image, threads, repeats):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, image)
    interpreter.invoke()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e3


def _ops(content):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    return " ".join(n for n in names if n not in ("QUANTIZE", "DEQUANTIZE"))


def measure(height, channels, threads, repeats):
    """Rows `[piece, float32 ms, int8 ms, int8 ops]`."""
    rng = np.random.default_rng(0)
    shape = (1, height, height, channels)
    calibration = np.maximum(rng.normal(size=(32, *shape[1:])), 0).astype(np.float32)
    rows = []
    for name, fn in _pieces(height, channels).items():
        float_file = _convert(fn, shape, False, calibration)
        int8_file = _convert(fn, shape, True, calibration)
        rows.append([name, _latency_ms(float_file, calibration[:1], threads, repeats),
                     _latency_ms(int8_file, calibration[:1], threads, repeats),
                     _ops(int8_file)])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tflite_ops", description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    if min(args.height, args.channels, args.threads, args.repeats) < 1 or args.height < 3:
        print(f"tflite_ops: expected --height >= 3 and positive --channels, --threads, "
              f"--repeats; received {args.height}, {args.channels}, {args.threads}, "
              f"{args.repeats}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    machine = common.machine_description()
    rows = measure(args.height, args.channels, args.threads, args.repeats)
    common.print_header(machine, "benchmarks.tflite_ops", argv,
                        f"batch 1, {args.threads} threads, XNNPACK")
    print(common.markdown_table(
        ["ops (1, %d, %d, %d)" % (args.height, args.height, args.channels),
         "float32 ms", "int8 ms", "int8 graph"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
