"""Similarity matching on Fashion-MNIST: local learning without labels.

1. Learns features from unlabeled Fashion-MNIST images with a non-negative
   similarity-matching layer (or its structured / deep variants), trained
   by `model.fit` with purely local Hebbian/anti-Hebbian rules.
2. Saves the learned feedforward filters as an image grid (PNG).
3. Trains a linear classifier on the frozen features.
4. Reports its clean accuracy and its accuracy under Gaussian noise (noise
   added in [0, 1] pixel space, clipped, mean over draws: the protocol of
   `keras_hebb.robustness.noise_accuracy`) next to `hah_vgg_small` and
   `vgg_small_bn` trained on the same images with the same small budget.

Run from the repository root:

    .venv/bin/python examples/similarity_matching.py

(`--help` lists the options; `--skip-baselines` for the similarity-matching
part alone). Needs the offline Fashion-MNIST files (Debian package
`dataset-fashion-mnist`).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=("nsm", "structured", "deep"),
                        default="nsm", help="similarity-matching network")
    parser.add_argument("--units", type=int, default=64,
                        help="neurons (nsm), per site (structured: filters), "
                             "or of the top layer (deep)")
    parser.add_argument("--train", type=int, default=10000,
                        help="training images (unlabeled for the features)")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--sm-epochs", type=int, default=2)
    parser.add_argument("--sm-learning-rate", type=float, default=0.02)
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--baseline-epochs", type=int, default=1)
    parser.add_argument("--sigmas", type=float, nargs="+",
                        default=[0.1, 0.2, 0.3])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument(
        "--output-dir",
        default=os.path.join(tempfile.gettempdir(), "keras_hebb_similarity_matching"),
        help="where the filters PNG, the feature model and results.json go")
    args = parser.parse_args(argv)
    for name in ("units", "train", "test", "sm_epochs", "classifier_epochs",
                 "baseline_epochs", "draws"):
        if getattr(args, name) <= 0:
            parser.exit(2, f"error: --{name.replace('_', '-')} must be > 0, "
                           f"got {getattr(args, name)}\n")
    if args.sm_learning_rate <= 0 or any(s < 0 for s in args.sigmas):
        parser.exit(2, "error: --sm-learning-rate must be > 0 and --sigmas "
                       f">= 0, got {args.sm_learning_rate} and {args.sigmas}\n")
    return args


def feature_layer(args):
    from keras_hebb.layers import (
        DeepSimilarityMatching,
        SimilarityMatching,
        StructuredSimilarityMatching,
    )

    if args.layer == "nsm":
        return SimilarityMatching(args.units, non_negative=True, name="nsm")
    if args.layer == "structured":
        return StructuredSimilarityMatching(
            args.units, kernel_size=8, strides=4, lateral_radius=1,
            name="structured_sm")
    return DeepSimilarityMatching([2 * args.units, args.units], gamma=0.1,
                                  name="deep_sm")


def build_feature_model(args, pixel_mean):
    """Images in [0, 1] -> non-negative features (centered inside)."""
    import keras

    from keras_hebb import SimilarityMatchingModel

    inputs = keras.Input((28, 28, 1), name="images")
    # Centering makes dissimilar images have negative similarity, which
    # non-negative outputs can only match with disjoint (sparse) codes.
    x = keras.layers.Normalization(mean=pixel_mean, variance=np.ones_like(
        pixel_mean), axis=(1, 2, 3), name="centering")(inputs)
    layer = feature_layer(args)
    if args.layer != "structured":
        x = keras.layers.Flatten(name="flatten_pixels")(x)
    x = layer(x)
    if args.layer == "structured":
        x = keras.layers.Flatten(name="flatten_features")(x)
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        args.sm_learning_rate, decay_steps=100, decay_rate=0.5)
    model = SimilarityMatchingModel(inputs, x, learning_rate=schedule,
                                    name="sm_features")
    return model, layer


def filter_images(layer):
    """The learned feedforward filters as a list of 2-D images."""
    import keras

    if hasattr(layer, "receptive_fields"):
        fields = layer.receptive_fields()[..., 0]  # rows, cols, f, k, k
        return list(fields.reshape(-1, *fields.shape[-2:]))
    kernel = layer.kernels[0] if hasattr(layer, "kernels") else layer.kernel
    kernel = keras.ops.convert_to_numpy(kernel)
    return [kernel[:, i].reshape(28, 28) for i in range(kernel.shape[1])]


def save_filter_grid(images, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns, rows))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index < len(images):
            image = images[index]
            limit = np.abs(image).max() or 1.0
            axis.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    figure.suptitle(title)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def train_linear_classifier(args, feature_model, x_train, y_train):
    """Frozen features -> (fixed standardization) -> Dense(10)."""
    import keras

    from keras_hebb import SimilarityMatchingModel

    features = feature_model.predict(x_train, batch_size=500, verbose=0)
    scale = keras.layers.Normalization(name="feature_scaling")
    scale.adapt(features)
    head = keras.layers.Dense(10, name="logits")
    head_model = keras.Sequential([keras.Input(features.shape[1:]), scale, head])
    head_model.compile(keras.optimizers.Adam(1e-3),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    head_model.fit(features, y_train, batch_size=128,
                   epochs=args.classifier_epochs, verbose=0)
    inputs = feature_model.input
    classifier = SimilarityMatchingModel(
        inputs, head(scale(feature_model.output)), local_updates=False,
        name="sm_linear_classifier")
    return classifier, features


def train_baseline(name, args, x_train, y_train):
    import keras

    from keras_hebb import architectures

    keras.utils.set_random_seed(args.seed)
    model = architectures.PRESETS[name](input_shape=(28, 28, 1))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=args.baseline_epochs,
              verbose=0)
    return model


def evaluate(model, x_test, y_test, args):
    from keras_hebb.robustness import attacks, noise_accuracy

    model_fn = attacks.make_model_fn(model)
    clean = float(np.mean(attacks.predict(model_fn, x_test, 500) == y_test))
    noisy = noise_accuracy(model_fn, x_test, y_test, args.sigmas,
                           draws=args.draws, seed=args.seed, batch_size=500)
    return {"clean": clean, "noise": {str(r["sigma"]): r["accuracy"] for r in noisy}}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from keras_hebb.data import load_arrays

        x_train, y_train = load_arrays("fashion_mnist", "train", limit=args.train)
        x_test, y_test = load_arrays("fashion_mnist", "test", limit=args.test)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # RuntimeError: keras_hebb.data.DatasetUnavailableError.
        print(f"error: {error}", file=sys.stderr)
        return 2
    import keras

    os.makedirs(args.output_dir, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    results = {"command": "examples/similarity_matching.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "models": {}}

    start = time.time()
    feature_model, layer = build_feature_model(args, x_train.mean(axis=0))
    feature_model.compile()
    history = feature_model.fit(x_train, batch_size=128, epochs=args.sm_epochs,
                                verbose=0).history
    sm_seconds = time.time() - start
    print(f"similarity matching ({args.layer}): objective per epoch "
          f"{[round(v, 1) for v in history['sm_objective']]}, residual "
          f"{history['sm_residual'][-1]:.1e}, {sm_seconds:.0f} s")
    grid = os.path.join(args.output_dir, f"filters_{args.layer}.png")
    save_filter_grid(filter_images(layer), grid,
                     f"{args.layer} filters learned without labels")
    feature_model.save(os.path.join(args.output_dir, f"features_{args.layer}.keras"))

    classifier, features = train_linear_classifier(args, feature_model,
                                                   x_train, y_train)
    silent = float(np.mean(features == 0))
    print(f"features: {features.shape[1]} per image, {silent:.0%} zero; "
          f"filters saved to {grid}")
    results["sm"] = {"layer": args.layer, "objective": history["sm_objective"],
                     "features": int(features.shape[1]), "fraction_zero": silent,
                     "seconds": sm_seconds, "filters_png": grid}
    results["models"][f"sm_{args.layer}+linear"] = evaluate(
        classifier, x_test, y_test, args)

    if not args.skip_baselines:
        for name in ("hah_vgg_small", "vgg_small_bn"):
            start = time.time()
            model = train_baseline(name, args, x_train, y_train)
            results["models"][name] = evaluate(model, x_test, y_test, args)
            results["models"][name]["train_seconds"] = time.time() - start

    header = "model".ljust(24) + "clean".rjust(8) + "".join(
        f"  sigma={s:g}".rjust(12) for s in args.sigmas)
    print(header)
    for name, scores in results["models"].items():
        print(name.ljust(24) + f"{scores['clean']:8.3f}" + "".join(
            f"{scores['noise'][str(float(s))]:12.3f}" for s in args.sigmas))
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
