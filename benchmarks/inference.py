"""Inference latency and throughput: Keras model, SavedModel, TFLite variants.

    python -m benchmarks.inference [--presets small,vgg16] [--repeats 20]
        [--train-images 6000] [--accuracy-images 1000] [--tflite-threads 2]
        [--variants float32,float16,dynamic,int8] [--model small=PATH.keras]
        [--int8-topk]

For each preset (`hah_vgg_small` on Fashion-MNIST, `hah_vgg16` on CIFAR-10
shapes) it measures, at batch 1 and 32, the median latency of

- the Keras model (`model(x, training=False)` in a `tf.function`),
- the SavedModel as TF Serving loads it (`serving_default`, uint8 pixels),
- each TFLite variant (`ai_edge_litert` interpreter, XNNPACK, uint8
  pixels; `--tflite-threads` threads, all cores by default),

and the throughput at batch 32. `--int8-topk` adds an int8 file whose
thresholds call `TOPK_V2` (as before the integer counting) for a
comparison in the same run. The artifacts come from the export program's
own functions (`export.savedmodel`, `export.tflite`). Accuracy needs a
trained model and labelled data: `hah_vgg_small` is trained for one epoch
on `--train-images` real Fashion-MNIST images (or loaded with `--model`)
and every artifact is scored on the first `--accuracy-images` test images;
`hah_vgg16` keeps random weights (no CIFAR-10 on this machine), so only
its timings are reported.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

PRESETS = {"small": "hah_vgg_small", "vgg16": "hah_vgg16"}
VARIANTS = ("float32", "float16", "dynamic", "int8")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small,vgg16")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--accuracy-images", type=int, default=1000)
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--tflite-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--int8-topk", action="store_true",
                        help="also time an int8 file whose thresholds use TOPK_V2")
    parser.add_argument("--model", action="append", default=[],
                        help="PRESET=PATH.keras: use a trained model (repeatable)")
    return parser


def _median_ms(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e3


def _model_and_data(preset, model_path, train_images, accuracy_images):
    import keras

    from keras_hebb import architectures, data

    name = PRESETS[preset]
    if preset == "small":
        x_test, y_test = data.load_arrays("fashion_mnist", "test", limit=accuracy_images)
        x_train, _ = data.load_arrays("fashion_mnist", "train", limit=max(train_images, 300))
        if model_path:
            model = keras.saving.load_model(model_path)
        else:
            keras.utils.set_random_seed(2022)
            model = architectures.PRESETS[name]()
            model.compile(keras.optimizers.Adam(1e-3),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            x_fit, y_fit = data.load_arrays("fashion_mnist", "train", limit=train_images)
            model.fit(x_fit, y_fit, batch_size=64, epochs=1, verbose=0)
        return model, x_train, x_test, y_test
    keras.utils.set_random_seed(2022)
    model = (keras.saving.load_model(model_path) if model_path
             else architectures.PRESETS[name]())
    rng = np.random.default_rng(0)
    x_train = rng.random((max(64, 32), 32, 32, 3), dtype=np.float32)
    return model, x_train, None, None


def measure(preset, args, model_path=None, log=print):
    """Rows `[preset, artifact, ms@1, ms@32, img/s@32, accuracy]`."""
    import tensorflow as tf

    from export import savedmodel, tflite

    model, x_train, x_test, y_test = _model_and_data(
        preset, model_path, args.train_images, args.accuracy_images)
    pixels = (np.round(x_train[:32] * 255.0).astype(np.uint8))
    images = pixels.astype(np.float32) / 255.0
    rows = []

    def accuracy(logits_of):
        if x_test is None:
            return "n/a"
        test_pixels = np.round(x_test * 255.0).astype(np.uint8)
        logits = np.concatenate([logits_of(test_pixels[i:i + 100])
                                 for i in range(0, len(test_pixels), 100)])
        return f"{100 * float(np.mean(logits.argmax(-1) == y_test)):.2f}%"

    def row(artifact, fn, logits_of):
        one = _median_ms(lambda: fn(1), args.repeats)
        batch = _median_ms(lambda: fn(32), max(3, args.repeats // 4))
        rows.append([PRESETS[preset], artifact, one, batch, 32 / batch * 1e3,
                     accuracy(logits_of)])
        log(f"  {PRESETS[preset]} {artifact}: {one:.2f} ms at batch 1")

    call = tf.function(lambda x: model(x, training=False))
    row("Keras model", lambda n: call(images[:n]).numpy(),
        lambda p: call(p.astype(np.float32) / 255.0).numpy())

    with tempfile.TemporaryDirectory(prefix="keras_hebb_bench_") as scratch:
        path = os.path.join(scratch, "savedmodel")
        savedmodel.write_savedmodel(model, path)
        serving = savedmodel.load_for_serving(path).signatures[savedmodel.SERVING_SIGNATURE]
        row("SavedModel (serving_default)",
            lambda n: serving(images=tf.constant(pixels[:n]))["logits"].numpy(),
            lambda p: serving(images=tf.constant(p))["logits"].numpy())
        source = os.path.join(scratch, "tflite_source")
        tflite.write_conversion_savedmodel(model, source)
        for variant in args.variants:
            content = tflite.convert(model, variant, savedmodel_dir=source,
                                     representative_images=x_train[:args.calibration_images])
            runner = tflite.TFLiteRunner(content, num_threads=args.tflite_threads)
            row(f"TFLite {variant} ({len(content) / 2**20:.1f} MiB)",
                lambda n, r=runner: r(pixels[:n])["logits"],
                lambda p, r=runner: r(p)["logits"])
            if variant == "int8" and args.int8_topk:
                content = tflite.convert(model, variant, representative_images=x_train[
                    :args.calibration_images], integer_threshold=False)
                runner = tflite.TFLiteRunner(content, num_threads=args.tflite_threads)
                row("TFLite int8, TOPK_V2 thresholds (before)",
                    lambda n, r=runner: r(pixels[:n])["logits"],
                    lambda p, r=runner: r(p)["logits"])
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    args.variants = [v for v in args.variants.split(",") if v]
    models = dict(item.split("=", 1) for item in args.model if "=" in item)
    problems = [p for p in presets if p not in PRESETS] + [
        v for v in args.variants if v not in VARIANTS]
    if (problems or not presets or args.repeats < 1 or args.train_images < 1
            or args.accuracy_images < 1 or args.tflite_threads < 1
            or len(models) != len(args.model)):
        print(f"inference: invalid arguments (presets from {sorted(PRESETS)}, variants "
              f"from {list(VARIANTS)}, positive counts, --model PRESET=PATH); "
              f"received {' '.join(argv if argv is not None else sys.argv[1:])}",
              file=sys.stderr)
        return 2
    from export.cli import set_tf_environment_defaults

    set_tf_environment_defaults()  # before TensorFlow is imported
    machine = common.machine_description()
    rows = []
    for preset in presets:
        rows += measure(preset, args, models.get(preset), log=lambda m: print(m, file=sys.stderr))
    common.print_header(machine, "benchmarks.inference", argv,
                        f"oneDNN {'on' if common.onednn_enabled() else 'off'}, "
                        f"TFLite threads {args.tflite_threads}")
    print(common.markdown_table(
        ["model", "artifact", "ms @ batch 1", "ms @ batch 32", "img/s @ 32", "accuracy"],
        rows))
    by = {(r[0], r[1].split(" (")[0]): r for r in rows}
    for preset in presets:
        name = PRESETS[preset]
        saved, int8 = by.get((name, "SavedModel")), by.get((name, "TFLite int8"))
        before = by.get((name, "TFLite int8, TOPK_V2 thresholds"))
        if saved and int8:
            print(f"\n{name}: batch-1 latency SavedModel / TFLite int8 = "
                  f"{saved[2] / int8[2]:.2f} (goal >= 2); accuracy {int8[5]} vs {saved[5]}"
                  + (f"; with TOPK_V2 thresholds {saved[2] / before[2]:.2f}" if before else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
