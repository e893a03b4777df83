"""Batch-norm statistics of trained models against clean images.

`python -m experiments batchnorm MODEL.keras ...` asks of each model
whether its batch-norm moving statistics fit clean images. A network
trained only on adversarial (or noisy) batches keeps the statistics of
those batches; where a channel is silent on them (moving variance near
0) but fires on clean images, batch norm multiplies its clean output by
up to `1 / sqrt(epsilon)` through weights that never learned from it,
and the clean accuracy can collapse while the network itself is fine.

For each model it prints, on the first `--images` test images:

- the clean accuracy with the moving statistics (what inference uses);
- the clean accuracy after recalibration: every batch-norm layer's
  statistics replaced by its inputs' mean and variance over the first
  `--calibration-images` *training* images (clean, in inference mode,
  layer by layer), on a copy of the model; the test images never choose
  them;
- per batch-norm layer, the channels silent in training (moving variance
  below `SILENT` of the largest) that vary on the clean calibration
  images (variance above `WAKES` times their moving variance), and the
  largest clean / moving variance ratio.

`--out FILE.json` also writes these numbers. It reads the models and the
offline Fashion-MNIST files only; it trains nothing.
"""

import json
import os
import sys

import numpy as np

from export.cli import Parser, UsageError, usage_failure

#: A channel is silent in training when its moving variance is below this
#: fraction of the layer's largest.
SILENT = 1e-6
#: ... and wakes on clean images when its clean variance is this many times
#: its moving variance (or more).
WAKES = 100.0


def _batch_norm_layers(model):
    """The model's top-level batch-norm layers (where the project's
    architectures put them)."""
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def _accuracy(model, images, labels):
    from keras_hebb.robustness import attacks

    predicted = attacks.predict(lambda x: model(x, training=False), images)
    return float(np.mean(predicted == labels.reshape(-1)))


def _input_moments(model, layer, images, batch=250):
    """Mean and variance of `layer`'s input per channel, inference mode."""
    import keras

    probe = keras.Model(model.inputs, layer.input)
    values = np.concatenate([np.asarray(probe(images[i:i + batch], training=False))
                             for i in range(0, len(images), batch)])
    values = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return values.mean(0), values.var(0)


def check(model, test_images, test_labels, calibration_images):
    """The numbers above for one model (a dict); the model is unchanged."""
    import keras

    layers = _batch_norm_layers(model)
    result = {"accuracy_moving": _accuracy(model, test_images, test_labels), "layers": {}}
    if not layers:
        result["accuracy_recalibrated"] = result["accuracy_moving"]
        return result
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    # Layer by layer, so each layer's statistics see the recalibrated ones before it.
    for layer, twin in zip(layers, _batch_norm_layers(copy)):
        moving = np.asarray(layer.moving_variance, np.float64)
        mean, variance = _input_moments(copy, twin, calibration_images)
        silent = moving < SILENT * max(moving.max(), 1e-30)
        wakes = silent & (variance > WAKES * moving)
        ratio = variance / np.maximum(moving, 1e-30)
        result["layers"][layer.name] = {
            "channels": int(moving.size), "silent": int(silent.sum()),
            "silent_but_active_on_clean": int(wakes.sum()),
            "largest_variance_ratio": float(ratio[~silent].max()) if (~silent).any() else None}
        twin.moving_mean.assign(mean.astype("float32"))
        twin.moving_variance.assign(variance.astype("float32"))
    result["accuracy_recalibrated"] = _accuracy(copy, test_images, test_labels)
    return result


def _parser():
    parser = Parser(prog="python -m experiments batchnorm",
                    description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", metavar="MODEL.keras", help="trained models")
    parser.add_argument("--images", type=int, default=2000,
                        help="first test images classified (default: 2000)")
    parser.add_argument("--calibration-images", type=int, default=2000,
                        help="first training images that recalibrate (default: 2000)")
    parser.add_argument("--dataset", default="fashion_mnist",
                        help="the models' dataset (default: fashion_mnist)")
    parser.add_argument("--out", default=None, metavar="FILE.json",
                        help="also write the numbers here")
    return parser


def _name(path):
    """`runs/NAME/model.keras` -> `NAME`; another file -> its name."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.basename(folder) if base == "model.keras" else base


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
        for option in ("images", "calibration_images"):
            if getattr(args, option) < 1:
                raise UsageError(f"--{option.replace('_', '-')} must be >= 1, received "
                                 f"{getattr(args, option)}")
        missing = [path for path in args.models if not os.path.exists(path)]
        if missing:
            raise UsageError(f"no model file {missing[0]!r}")
    except UsageError as error:
        return usage_failure(error)
    import keras

    import keras_hebb  # noqa: F401  (registers the layers the models use)
    from keras_hebb.data.arrays import load_arrays

    test_images, test_labels = load_arrays(args.dataset, "test", limit=args.images)
    calibration, _ = load_arrays(args.dataset, "train", limit=args.calibration_images)
    results = {}
    print(f"{'model':32} {'clean, moving stats':>20} {'clean, recalibrated':>20}  "
          "silent channels that fire on clean images (of silent, of all)")
    for path in args.models:
        name = _name(path)
        results[name] = check(keras.saving.load_model(path), test_images, test_labels,
                              calibration)
        layers = results[name]["layers"]
        counts = ", ".join(f"{layer} {v['silent_but_active_on_clean']} ({v['silent']}, "
                           f"{v['channels']})" for layer, v in layers.items()) or "no batch norm"
        print(f"{name:32} {results[name]['accuracy_moving']:>19.1%} "
              f"{results[name]['accuracy_recalibrated']:>19.1%}   {counts}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": args.images, "calibration_images": args.calibration_images,
                       "dataset": args.dataset, "models": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
