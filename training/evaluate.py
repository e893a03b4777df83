"""`python -m training evaluate`: robustness report of one or several models.

    python -m training evaluate --model std.keras hah.keras \\
        --dataset fashion_mnist --suite quick --images 500 --out reports/quick

Every model is evaluated on exactly the same images, noise draws and
attack seeds; the report (report.json, report.md, PNG plots) goes to
`--out`. Robust accuracy is the per-image worst case over the whole suite
(keras_hebb.robustness; docs/ROBUSTNESS.md); `--suite full` attacks a
model that shows a sign of gradient masking again with Square at
AutoAttack's 5,000 queries, and a failed check prints the gap it names
under the model's line. Mistakes a user can make
(missing or invalid model file, mismatched dataset, unknown attack,
negative budget) end with one line on stderr and exit status 2.

An interrupted evaluation continues where it stopped: each model's
finished norm (all its budgets and attacks) is kept in
`--out/.partial/` until the report is written, and the same command
reads it back instead of attacking again (only when the models' weights,
the images, the suite's settings and the seed are the same).
"""

import argparse
import os
import sys

from export.cli import (
    Parser,
    UsageError,
    first_line,
    set_tf_environment_defaults,
    usage_failure,
)

set_tf_environment_defaults()  # before TensorFlow is imported

#: Where finished norms wait for the report, inside `--out`.
PARTIAL_FOLDER = ".partial"


def _floats(text):
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, received {text!r}"
        ) from None


def build_parser():
    parser = Parser(
        prog="python -m training evaluate",
        description="Clean, noise and worst-case adversarial accuracy, sanity "
        "checks, activation sparsity; JSON, Markdown and PNG report.",
    )
    parser.add_argument("--model", nargs="+", required=True, metavar="MODEL.keras",
                        help="one or several .keras models, evaluated side by side")
    parser.add_argument("--transfer-from", nargs="*", default=None, metavar="MODEL.keras",
                        help="source models of the transfer attack (default: the "
                        "other --model files); the full suite's transfer_bpda also "
                        "attacks a source with BPDA surrogates (a HaH model) through them")
    parser.add_argument("--dataset", default="fashion_mnist",
                        help="dataset name for keras_hebb.data.load_arrays "
                        "(default: fashion_mnist)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--suite", choices=("quick", "full"), default="quick",
                        help="attack suite preset (default: quick)")
    parser.add_argument("--images", type=int, default=None,
                        help="number of images (default: 500 quick, 1000 full)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--out", default="robustness_report", help="output directory")
    parser.add_argument("--attacks", default=None,
                        help="comma-separated attacks to run instead of the preset's "
                        "(any registered attack: keras_hebb.robustness.registry)")
    parser.add_argument("--autoattack", choices=("standard",), default=None,
                        help="run APGD-CE, APGD-T and Square at AutoAttack's standard "
                        "strength (APGD-CE 100 steps x 5 restarts, APGD-T 100 steps x 9 "
                        "target classes, Square 5,000 queries), added to the suite if "
                        "--attacks leaves them out")
    parser.add_argument("--linf-budgets", type=_floats, default=None,
                        help="comma-separated Linf budgets in [0, 1] pixels")
    parser.add_argument("--l2-budgets", type=_floats, default=None,
                        help="comma-separated L2 budgets in [0, 1] pixels")
    parser.add_argument("--noise-sigmas", type=_floats, default=None,
                        help="comma-separated Gaussian noise sigmas")
    parser.add_argument("--certify-sigmas", type=_floats, default=None,
                        help="comma-separated noise sigmas of randomized smoothing: "
                        "certified L2 accuracy (default: none)")
    parser.add_argument("--certify-images", type=int, default=100,
                        help="images certified, the first of the evaluated ones "
                        "(default: 100)")
    parser.add_argument("--certify-n", type=int, default=1000,
                        help="noise draws estimating the top class's probability "
                        "(default: 1000)")
    parser.add_argument("--certify-n0", type=int, default=100,
                        help="noise draws selecting the top class (default: 100)")
    parser.add_argument("--certify-alpha", type=float, default=0.001,
                        help="failure probability of each certificate (default: 0.001)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _config(args):
    import dataclasses

    from keras_hebb.robustness import suite

    config = suite.PRESETS[args.suite]
    changes = {}
    if args.attacks is not None:
        names = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
        known = suite.attack_names()  # the live registry: attacks registered at run time too
        unknown = [a for a in names if a not in known]
        if unknown or not names:
            raise UsageError(
                f"unknown attack {unknown[0] if unknown else args.attacks!r}; "
                f"expected some of {', '.join(known)}"
            )
        changes["attacks"] = names
    for option, field in (("linf_budgets", "linf_budgets"), ("l2_budgets", "l2_budgets"),
                          ("noise_sigmas", "noise_sigmas")):
        values = getattr(args, option)
        if values is None:
            continue
        bad = [v for v in values if not v >= 0]
        if bad:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} must be numbers >= 0, received {bad[0]:g}")
        changes[field] = values
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, received {args.batch_size}")
        changes["batch_size"] = args.batch_size
    try:
        config = dataclasses.replace(config, **changes)
        if args.autoattack == "standard":
            config = suite.with_autoattack_standard(config)
        return config
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_certify(args):
    if args.certify_sigmas is None:
        return
    bad = [v for v in args.certify_sigmas if not v > 0]
    if bad or not args.certify_sigmas:
        raise UsageError(f"--certify-sigmas must be numbers > 0, received "
                         f"{bad[0] if bad else 'none'}")
    for flag, value in (("--certify-images", args.certify_images),
                        ("--certify-n", args.certify_n), ("--certify-n0", args.certify_n0)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, received {value}")
    if not 0 < args.certify_alpha < 1:
        raise UsageError(f"--certify-alpha must be in (0, 1), received {args.certify_alpha:g}")


def _check_model_file(path):
    # Before TensorFlow is imported: a typo fails in a fraction of a second.
    import zipfile

    if not os.path.isfile(path):
        raise UsageError(f"model file not found: {path}")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise UsageError(f"could not load a Keras model from {path}: not a .keras archive")


def _load_model(path):
    _check_model_file(path)
    import keras

    import keras_hebb  # noqa: F401  (registers the custom layers)

    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # any failure to read means a bad file
        raise UsageError(f"could not load a Keras model from {path}: "
                         f"{first_line(error)}") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise UsageError(f"{path} is not a single-input Keras model")
    return model


def _model_names(paths):
    """Report labels: file names, or the run directories when those repeat
    or are the generic `model` (every training run writes
    `RUN_DIR/model.keras`)."""
    bases = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(bases)) < len(bases) or "model" in bases:
        bases = [os.path.basename(os.path.dirname(os.path.abspath(p))) or b
                 for p, b in zip(paths, bases)]
    names = []
    for base in bases:
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _load_images(args, images_wanted, models):
    """The first `images_wanted` images (float32) and labels of the dataset;
    `UsageError` if it cannot load or does not fit a model."""
    import numpy as np

    from keras_hebb import data

    try:
        images, labels = data.load_arrays(args.dataset, args.split, images_wanted)
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise UsageError(f"could not load dataset {args.dataset!r} ({args.split}): "
                         f"{first_line(error)}") from None
    images = np.asarray(images, np.float32)
    for name, model in models.items():
        expected = tuple(model.input_shape[1:])
        if tuple(images.shape[1:]) != expected:
            raise UsageError(
                f"dataset {args.dataset!r} has images of shape {tuple(images.shape[1:])} "
                f"but model {name!r} expects {expected}"
            )
        if int(model.output_shape[-1]) <= int(labels.max()):
            raise UsageError(
                f"model {name!r} has {model.output_shape[-1]} outputs but dataset "
                f"{args.dataset!r} has label {int(labels.max())}"
            )
    return images, labels


def _transfer_sources(args, paths, names, models, images):
    """`{evaluated model: [its transfer sources]}` (None without
    `--transfer-from`); sources that are not evaluated go into `models`."""
    if args.transfer_from is None:
        return None
    sources = list(dict.fromkeys(args.transfer_from))
    source_names = []
    for path in sources:
        if path in paths:
            source_names.append(names[paths.index(path)])
            continue
        name = "source_" + _model_names([path])[0]
        model = _load_model(path)
        if tuple(model.input_shape[1:]) != tuple(images.shape[1:]):
            raise UsageError(
                f"transfer source {path} expects {tuple(model.input_shape[1:])}, "
                f"dataset images are {tuple(images.shape[1:])}")
        models[name] = model
        source_names.append(name)
    transfer_sources = {n: [s for s in source_names if s != n] for n in names}
    for name in source_names:
        transfer_sources.setdefault(name, [])
    return transfer_sources


def _certify(args, results, evaluated, images, labels):
    """Certified accuracy by randomized smoothing of each evaluated model,
    and its settings, into `results`."""
    from keras_hebb.robustness import attacks, smoothing

    count = min(args.certify_images, len(images))
    results["settings"]["certify"] = {
        "sigmas": list(args.certify_sigmas), "images": count, "n": args.certify_n,
        "n0": args.certify_n0, "alpha": args.certify_alpha,
        "radii": list(smoothing.RADII)}
    for name, model in evaluated.items():
        results["models"][name]["certified"] = smoothing.evaluate(
            attacks.make_model_fn(model), images[:count], labels[:count],
            args.certify_sigmas, int(model.output_shape[-1]), n0=args.certify_n0,
            n=args.certify_n, alpha=args.certify_alpha, seed=args.seed)


def _sparsity_and_kernels(results, evaluated, images):
    """Each evaluated model's activation statistics into `results`; returns
    `{name: first layer's kernel}` for the report's filter plots."""
    from keras_hebb import sparsity
    from keras_hebb.robustness import report

    kernels = {}
    for name, model in evaluated.items():
        try:
            stats = sparsity.activation_statistics(model, images)
        except ValueError as error:
            stats = None
            results["models"][name]["sparsity_error"] = str(error)
        results["models"][name]["sparsity"] = stats
        kernels[name] = report.first_layer_kernel(model)
    return kernels


def run(args):
    """Runs the evaluation for parsed `args`; returns the results dict."""
    for path in list(args.model) + list(args.transfer_from or []):
        _check_model_file(path)
    from keras_hebb.robustness import report, resume, suite

    config = _config(args)
    _check_certify(args)
    images_wanted = args.images if args.images is not None else (
        500 if args.suite == "quick" else 1000)
    if images_wanted < 1:
        raise UsageError(f"--images must be >= 1, received {images_wanted}")
    paths = list(dict.fromkeys(args.model))
    names = _model_names(paths)
    models = {name: _load_model(path) for name, path in zip(names, paths)}
    images, labels = _load_images(args, images_wanted, models)
    transfer_sources = _transfer_sources(args, paths, names, models, images)
    evaluated = {n: models[n] for n in names}
    extra = {n: m for n, m in models.items() if n not in evaluated}

    # Each finished norm is kept in the output folder until the report is
    # written: the same command after an interruption continues from there.
    partial = os.path.join(args.out, PARTIAL_FOLDER)
    results = suite.run_suite(
        {**evaluated, **extra}, images, labels, config, seed=args.seed,
        transfer_sources=transfer_sources, progress=not args.no_progress,
        evaluate=list(evaluated), resume_dir=partial,
    )
    results["settings"].update({
        "dataset": args.dataset, "split": args.split,
        # Relative to the report's folder: no machine's paths in reports.
        "model_files": {n: _relative_to(p, args.out) for n, p in zip(names, paths)},
        "transfer_files": [_relative_to(p, args.out) for p in args.transfer_from or []],
    })
    if args.certify_sigmas is not None:
        _certify(args, results, evaluated, images, labels)
    kernels = _sparsity_and_kernels(results, evaluated, images)
    written = report.write_report(results, args.out, kernels)
    resume.clear(partial)
    return results, written


def _relative_to(path, folder):
    return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))


def main(argv=None):
    """Runs `evaluate` with `argv`; returns the exit status.

    0 when the report was written (failed sanity checks are reported in it
    and printed, not turned into an error), 2 for a usage mistake.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        results, written = run(args)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except UsageError as error:
        return usage_failure(error)
    for name, entry in results["models"].items():
        failed = [k for k, c in entry["checks"].items() if c["passed"] is False]
        not_run = [k for k, c in entry["checks"].items() if c["passed"] is None]
        verdict = ("FAILED: " + ", ".join(failed) if failed else
                   "all passed" if entry["checks_passed"] else "incomplete")
        print(f"{name}: clean {entry['clean_accuracy']:.3f}, checks {verdict}"
              + (f" (not run: {', '.join(not_run)})" if not_run else "")
              + f", {entry['seconds']:.0f} s")
        for key in failed:
            if entry["checks"][key].get("message"):
                print(f"  {key}: {entry['checks'][key]['message']}")
        signs = (entry.get("escalation") or {}).get("signs")
        if signs:
            print(f"  signs of gradient masking ({', '.join(signs)}): attacked again "
                  "with Square at AutoAttack's strength")
    print(f"report: {os.path.join(args.out, 'report.md')} ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
