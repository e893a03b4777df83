"""How much accuracy a network loses in int8 TFLite, and where.

    python -m benchmarks.int8_accuracy [--hah-blocks 2] [--train-images 8000]
        [--epochs 2] [--test-images 4000] [--calibration-images 300]
        [--seed 0] [--denylist normalization,...] [--legacy-normalization]
    python -m benchmarks.int8_accuracy --models NAME=MODEL.keras ... [--test-images 4000]

Trains a two-block network (16, 32 filters) on real Fashion-MNIST, converts
it with the export program's own `export.tflite.convert` (int8, uint8
pixels in) and prints, on the first `--test-images` test images: Keras and
int8 accuracy, the drop (in points) and the argmax agreement (the share of
images whose class the int8 file keeps). The drop is the net count of
images flipping between right and wrong over the number of images: its
sampling error is about sqrt((1 - agreement) / images).

`--hah-blocks 0` gives the standard counterpart (conv, ReLU, batch norm).
`--models NAME=PATH ...` converts trained Fashion-MNIST models instead
(calibrated on the first `--calibration-images` training images), one row
each: how trained networks of each design quantize (docs/EXPORT.md).
`--legacy-normalization` traces the conversion with the divisive
normalization's reciprocal written as before (`1 / (sigma * peak +
(1 - sigma) * field + eps)`: 5 requantized intermediates instead of 3).
`--denylist a,b` converts a second time with TFLite's quantization debugger
(public `tf.lite.experimental.QuantizationDebugger`) keeping in float the
nodes whose names contain one of the words (e.g. `block1_hah/normalization`):
which part of the network the int8 error comes from. The debugger's files
take float input; only their accuracy is reported.

Set `ONEDNN_MAX_CPU_ISA=AVX2` or `TF_ENABLE_ONEDNN_OPTS=0` to train and
convert on another CPU path (another CPU's float results).
"""

import argparse
import contextlib
import csv
import io
import os
import sys
import tempfile

import numpy as np

from benchmarks import common


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_accuracy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--hah-blocks", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=4000)
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--denylist", default="",
                        help="comma-separated node-name words kept in float (second file)")
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME=MODEL.keras",
                        help="trained models to convert instead of training one")
    parser.add_argument("--legacy-normalization", action="store_true",
                        help="the divisive normalization's reciprocal as before (5 intermediates)")
    return parser.parse_args(argv)


def _legacy_reciprocal(field, peak, sigma):
    return 1.0 / (sigma * peak + (1.0 - sigma) * field + 1e-7)


@contextlib.contextmanager
def _normalization_formula(legacy):
    from keras_hebb.layers import divisive_normalization

    current = divisive_normalization.reciprocal_denominator
    if legacy:
        divisive_normalization.reciprocal_denominator = _legacy_reciprocal
    try:
        yield
    finally:
        divisive_normalization.reciprocal_denominator = current


def _train(args):
    import keras

    from keras_hebb import data
    from keras_hebb.architectures import build_vgg

    keras.utils.set_random_seed(args.seed)
    images, labels = data.load_arrays("fashion_mnist", "train", args.train_images)
    model = build_vgg((16, "M", 32, "M"), hah_blocks=args.hah_blocks, input_shape=(28, 28, 1),
                      name="int8_accuracy")
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=64, epochs=args.epochs, verbose=0)
    return model, images[:args.calibration_images]


def _denylisted_logits(model, calibration, images, words):
    """Logits of an int8 file whose nodes named by `words` stay float."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from export.savedmodel import INPUT_NAME, SERVING_SIGNATURE, write_savedmodel
    from keras_hebb import runtime

    with tempfile.TemporaryDirectory() as source:
        with runtime.integer_threshold():
            write_savedmodel(model, source, {SERVING_SIGNATURE: "float32"})

        def converter():
            c = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=[SERVING_SIGNATURE])
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.representative_dataset = lambda: (
                {INPUT_NAME: calibration[i:i + 16]} for i in range(0, len(calibration), 16))
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
            return c

        def debug_dataset():
            for i in range(4):
                yield [images[i:i + 1]]

        statistics = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=debug_dataset)
        statistics.run()
        dump = io.StringIO()
        statistics.layer_statistics_dump(dump)
        nodes = sorted({row["tensor_name"] for row in csv.DictReader(io.StringIO(dump.getvalue()))
                        if any(word in row["tensor_name"] for word in words)})
        if not nodes:
            raise SystemExit(f"error: no quantized node name contains any of {words}")
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
        content = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=debug_dataset,
            debug_options=options).get_nondebug_quantized_model()
    runner = Interpreter(model_content=content).get_signature_runner(SERVING_SIGNATURE)
    return np.concatenate([runner(**{INPUT_NAME: images[i:i + 100]})["logits"]
                           for i in range(0, len(images), 100)]), len(nodes)


def _trained_models_rows(args, pixels, images, labels):
    """One row per `NAME=PATH` of `--models`: the int8 file of that model."""
    import keras

    import keras_hebb  # noqa: F401  (registers the layers for load_model)
    from export import tflite
    from keras_hebb import data

    calibration, _ = data.load_arrays("fashion_mnist", "train", args.calibration_images)
    rows = []
    for item in args.models:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"error: --models takes NAME=MODEL.keras. Received: {item!r}")
        model = keras.models.load_model(path)
        reference = model.predict(images, batch_size=250, verbose=0)
        content = tflite.convert(model, "int8", representative_images=calibration)
        rows.append(_row(name, tflite.TFLiteRunner(content).logits(pixels), reference, labels))
    return rows


def _row(name, logits, reference, labels):
    keras_accuracy = np.mean(reference.argmax(-1) == labels)
    accuracy = np.mean(logits.argmax(-1) == labels)
    agreement = np.mean(logits.argmax(-1) == reference.argmax(-1))
    return [name, f"{100 * keras_accuracy:.2f}%", f"{100 * accuracy:.2f}%",
            f"{100 * (keras_accuracy - accuracy):.2f}", f"{100 * agreement:.2f}%",
            f"{100 * np.sqrt((1 - agreement) / len(labels)):.2f}"]


def main(argv=None):
    machine = common.machine_description()
    args = _arguments(argv)
    from export.cli import set_tf_environment_defaults

    set_tf_environment_defaults()  # before TensorFlow is imported
    conditions = (f"oneDNN {'on' if common.onednn_enabled() else 'off'}"
                  + (f", ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}"
                     if "ONEDNN_MAX_CPU_ISA" in os.environ else ""))
    common.print_header(machine, "benchmarks.int8_accuracy", argv, conditions)

    from export import tflite
    from keras_hebb import data

    test_images, labels = data.load_arrays("fashion_mnist", "test", args.test_images)
    pixels = np.round(test_images * 255.0).astype(np.uint8)
    images = pixels.astype(np.float32) / 255.0
    if args.models:
        rows = _trained_models_rows(args, pixels, images, labels)
        print(common.markdown_table(
            ["model", "Keras accuracy", "int8 accuracy", "drop (points)", "argmax agreement",
             "sampling error of the drop (points)"], rows))
        return 0
    model, calibration = _train(args)
    reference = model.predict(images, batch_size=250, verbose=0)
    with _normalization_formula(args.legacy_normalization):
        content = tflite.convert(model, "int8", representative_images=calibration)
    name = "int8" + (" (legacy normalization)" if args.legacy_normalization else "")
    rows = [_row(name, tflite.TFLiteRunner(content).logits(pixels), reference, labels)]
    words = [w.strip() for w in args.denylist.split(",") if w.strip()]
    if words:
        logits, count = _denylisted_logits(model, calibration, images, words)
        rows.append(_row(f"int8, {count} nodes float ({', '.join(words)})",
                         logits, reference, labels))
    print(common.markdown_table(
        ["file", "Keras accuracy", "int8 accuracy", "drop (points)", "argmax agreement",
         "sampling error of the drop (points)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
