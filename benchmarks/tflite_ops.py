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
`FractionalThreshold` trace for export: the `top_k` path (`TOPK_V2`) and
the integer counting that the TFLite export traces
(`keras_hebb.runtime.integer_threshold`), plus the broadcast division
they used before (a reference-kernel DIV in int8).
"""

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import common


def _pieces(height, channels):
    """Graph prefixes, each a function of the ReLU output `a`. The shipped
    rows call the library's own layers (as a HaH block sets them up); the
    intermediate rows and the old division repeat their first ops."""
    import tensorflow as tf

    from keras_hebb import runtime
    from keras_hebb.layers import DivisiveNormalization, FractionalThreshold

    # The paper's: linf, 3x3, sigma 0.1; inputs after a ReLU, as in HaHBlock.
    normalization = DivisiveNormalization(nonnegative_inputs=True)
    threshold = FractionalThreshold(nonnegative_inputs=True)  # keeps 20%
    shape = (1, height, height, channels)
    normalization.build(shape)
    threshold.build(shape)
    positions = height * height
    sigma = normalization.sigma

    def denominator(a):
        field = normalization.suppression_field(a)
        return sigma * tf.reduce_max(field, (1, 2), keepdims=True) + (1.0 - sigma) * field + 1e-7

    def transposed(u):
        return tf.transpose(tf.reshape(u, (1, positions, channels)), (0, 2, 1))

    def kth(u):  # FractionalThreshold's inference path: top_k, then the minimum
        top, _ = tf.math.top_k(transposed(u), threshold.threshold_rank, sorted=False)
        return tf.reduce_min(top, -1)

    def integer_threshold(u):
        with runtime.integer_threshold():  # read while tracing
            return threshold(u)

    return {
        "max pool": lambda a: tf.nn.max_pool2d(a, 3, 1, "SAME"),
        "+ channel mean (field)": normalization.suppression_field,
        "+ peak, denominator": denominator,
        "divisive normalization, broadcast DIV (before)": lambda a: a / denominator(a),
        "divisive normalization, reciprocal MUL (shipped)": normalization,
        "DN + transpose": lambda a: transposed(normalization(a)),
        "DN + k-th value (TOPK_V2)": lambda a: kth(normalization(a)),
        "DN + threshold, top_k (SavedModel; --topk-thresholds files)":
            lambda a: threshold(normalization(a)),
        "DN + threshold by integer counting (TFLite export)":
            lambda a: integer_threshold(normalization(a)),
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

    from keras_hebb import runtime

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = [op["op_name"] for op in runtime.tflite_op_details(interpreter)]
    return _runs([n for n in names if n not in ("QUANTIZE", "DEQUANTIZE")])


def _runs(names, longest=8):
    """`A B C B C B C D` -> `A (B C) x3 D`: repeated op sequences, counted."""
    out, i = [], 0
    while i < len(names):
        for size in range(1, longest + 1):
            unit = names[i:i + size]
            count = 1
            while names[i + count * size:i + (count + 1) * size] == unit:
                count += 1
            if count > 2:
                out.append(f"({' '.join(unit)}) x{count}")
                i += count * size
                break
        else:
            out.append(names[i])
            i += 1
    return " ".join(out)


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
