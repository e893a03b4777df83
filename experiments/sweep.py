"""`python -m experiments sweep`: where does the HaH cost change the network?

    python -m experiments sweep --out results/fashion_mnist_sweep     # 12 runs, ~80 min
    python -m experiments sweep --out /tmp/s --tiny                    # the test's budget

Trains the HaH network of a config (default: `hah_vgg_small`, 3 epochs)
with its HaH cost weights scaled by each factor of `--scales` (x0 is the
network without the cost: divisive normalization and threshold only), for
each seed, then probes every model on the first `--images` test images:

- clean accuracy, and accuracy under Gaussian noise (`--noise-sigmas`,
  3 draws each, the draws of `python -m training evaluate`);
- per layer: the fraction of non-zero activations and the activation
  disparity (`keras_hebb.sparsity.activation_statistics`), and per HaH
  block the HaH cost on the test set (from training's `metrics.json`);
- per HaH block, how far its kernel moved away from the kernel of the
  x0 model of the same seed: `||W - W0|| / ||W0||`. Same seed means same
  initial weights and same batches, so this is zero unless the cost acts.

The HaH effect of a measure at a scale is its mean over seeds of the
difference to the x0 model of the same seed; it counts as clear when it
is larger than twice the seed spread. The report (`OUT/sweep.md`,
`sweep.json`, `sweep.png`, `filters.png`; `experiments/sweep_report.py`)
is computed from the run files; `timings.json` keeps the settings and
each step's seconds. Every step is
skipped when its output exists, so an interrupted sweep continues where
it stopped (a training run resumes from its last epoch).
"""

import json
import os
import sys
import time

from export.cli import Parser, UsageError, prepare_tensorflow, usage_failure
from experiments import docs, steps, sweep_report
from experiments.networks import NETWORKS, ROOT, TINY_TRAINING
from experiments.sweep_report import run_name

prepare_tensorflow()  # before the steps import TensorFlow

DEFAULT_CONFIG = NETWORKS["small"]["hah"]
SCALES = (0, 1, 10, 30, 100, 300)
SEEDS = (2022, 2023)
NOISE_SIGMAS = (0.1, 0.2, 0.3)
BUDGETS = {
    "full": {"train": [], "images": 2000},
    "tiny": {"train": TINY_TRAINING, "images": 32},
}


def scaled_alphas(base_alphas, scale):
    """The alphas of a scale, rounded so a config written by hand matches."""
    return [round(a * scale, 6) for a in base_alphas]


def base_alphas(config_path):
    """The HaH alphas the config's model uses (the paper's by default)."""
    from keras_hebb import architectures
    from training import config as training_config

    config = training_config.load_config(config_path)
    preset = architectures.PRESETS.get(config["architecture"]) \
        if isinstance(config["architecture"], str) else None
    model = preset(hah_alphas=config["hah_alphas"]) if preset else None
    if not hasattr(model, "hah_alphas"):
        raise UsageError(f"the config {config_path} must name a preset with HaH blocks "
                         "(e.g. hah_vgg_small)")
    return list(model.hah_alphas)


def train_all(out, config_path, scales, seeds, budget, alphas):
    """Trains every run without a finished model; seconds per step."""
    seconds = {}
    for seed in seeds:
        for scale in scales:
            name = run_name(scale, seed)
            if os.path.exists(os.path.join(out, "runs", name, "model.keras")):
                continue
            values = ",".join(repr(float(a)) for a in scaled_alphas(alphas, scale))
            seconds["train " + name] = steps.run(
                f"train {name}", "train",
                ["--config", config_path, "--out", os.path.join(out, "runs", name),
                 "--skip-finished", "--verbose", "2", *budget["train"],
                 "--set", f"seed={seed}", "--set", f"hah_alphas=[{values}]"])
    return seconds


def probe(model_path, images, labels, sigmas):
    """Clean and noise accuracy, per-layer sparsity and disparity."""
    import keras

    from keras_hebb import sparsity
    from keras_hebb.robustness import attacks, noise

    model = keras.models.load_model(model_path)
    model_fn = attacks.make_model_fn(model)
    clean = float((attacks.predict(model_fn, images, 256) == labels).mean())
    return {
        "clean": clean,
        "noise": {f"{r['sigma']:g}": r["accuracy"]
                  for r in noise.noise_accuracy(model_fn, images, labels, sigmas)},
        "layers": sparsity.activation_statistics(model, images),
    }


def probe_all(out, runs, images_count, sigmas):
    """Probes every trained run without `probe/NAME.json`."""
    from keras_hebb import data

    seconds = {}
    images = labels = None
    for name in runs:
        path = os.path.join(out, "probe", f"{name}.json")
        model_path = os.path.join(out, "runs", name, "model.keras")
        if os.path.exists(path) or not os.path.exists(model_path):
            continue
        if images is None:
            images, labels = data.load_arrays("fashion_mnist", "test", limit=images_count)
        start = time.time()
        print(f"=== probe {name} ({len(images)} test images)", flush=True)
        result = {"images": int(len(images)), **probe(model_path, images, labels, sigmas)}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        seconds["probe " + name] = time.time() - start
    return seconds


def _parse_list(text, kind, what, low):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < low for v in values):
        raise UsageError(f"{what} must be a comma-separated list of numbers >= {low}, "
                         f"received {text!r}")
    return values


def _parser():
    parser = Parser(prog="python -m experiments sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/fashion_mnist_sweep",
                        help="output directory (default: results/fashion_mnist_sweep)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"HaH network's config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES),
                        help="comma-separated factors of the config's alphas; 0 must be "
                        "one (default: %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images probed (default: 2000; --tiny 32)")
    parser.add_argument("--noise-sigmas", default=",".join(f"{s:g}" for s in NOISE_SIGMAS),
                        help="comma-separated noise sigmas (default: %(default)s)")
    parser.add_argument("--report-only", action="store_true",
                        help="only write the report from the finished steps")
    parser.add_argument("--docs", nargs="+", default=[], metavar="DOC.md",
                        help="also put the report into each DOC.md between its "
                        f"'{docs.SWEEP_BEGIN}' and '{docs.SWEEP_END}' lines")
    parser.add_argument("--section", default=None,
                        help="use the DOC.md lines '<!-- sweep-SECTION:begin -->' and "
                        "'<!-- sweep-SECTION:end -->' instead (several sweeps in one document)")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (tests)")
    return parser


def _settings(args, begin, end):
    """The checked `(scales, seeds, sigmas, budget, images, config path)` of
    the arguments; `UsageError` if wrong."""
    scales = sorted(set(_parse_list(args.scales, float, "--scales", 0)))
    scales = [int(s) if float(s).is_integer() else s for s in scales]
    if 0 not in scales:
        raise UsageError("--scales must include 0 (the model without the cost "
                         "is what the effect is measured against)")
    seeds = [int(s) for s in _parse_list(args.seeds, int, "--seeds", 0)]
    sigmas = _parse_list(args.noise_sigmas, float, "--noise-sigmas", 0)
    budget = BUDGETS["tiny" if args.tiny else "full"]
    images = args.images if args.images is not None else budget["images"]
    if images < 1:
        raise UsageError(f"--images must be >= 1, received {images}")
    config_path = os.path.join(ROOT, args.config) if not os.path.isabs(args.config) \
        and not os.path.exists(args.config) else args.config
    if not os.path.exists(config_path):
        raise UsageError(f"no config file {args.config}")
    for doc in args.docs:
        if not docs.has_markers(doc, begin, end):
            raise UsageError(f"{doc} has no '{begin}' and '{end}' lines")
    return scales, seeds, sigmas, budget, images, config_path


def _run_steps(out, config_path, scales, seeds, budget, alphas, images, sigmas, timings):
    """Trains and probes every run without output; its seconds into `timings`."""
    started = time.time()
    seconds = train_all(out, config_path, scales, seeds, budget, alphas)
    seconds.update(probe_all(out, [run_name(s, seed) for seed in seeds for s in scales],
                             images, sigmas))
    timings.update({k: round(v, 1) for k, v in seconds.items()})
    timings.setdefault("calls", []).append(
        {"seconds": round(time.time() - started, 1),
         "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=1)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        begin, end = docs.sweep_markers(args.section)
        scales, seeds, sigmas, budget, images, config_path = _settings(args, begin, end)
        out = os.path.abspath(args.out)
        os.makedirs(out, exist_ok=True)
        alphas = base_alphas(config_path)
        timings = steps.load_json(os.path.join(out, "timings.json")) or {}
        timings["settings"] = {"config": os.path.relpath(config_path, ROOT), "alphas": alphas,
                               "scales": scales, "seeds": seeds, "images": images,
                               "noise_sigmas": sigmas, "tiny": bool(args.tiny)}
        if not args.report_only:
            _run_steps(out, config_path, scales, seeds, budget, alphas, images, sigmas,
                       timings)
        table = sweep_report.summarize(out, scales, seeds)
        if not table:
            raise UsageError(f"nothing finished yet to report in {args.out}")
    except UsageError as error:
        return usage_failure(error)
    path = sweep_report.write(out, table, alphas, sigmas, timings, steps.made_by(
        "sweep", argv, os.path.join(out, "sweep.md"), _parser()))
    print(f"\nSweep report: {path}")
    for doc in args.docs:
        docs.replace_in_file(doc, begin, end, path)
        print(f"Sweep tables copied into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
