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
difference to the x0 model of the same seed. It counts as clear when it
is larger than twice the seed spread: the pooled standard deviation over
seeds of the measure at x0 and at that scale. The report (`OUT/sweep.md`,
`sweep.json`, `sweep.png`, `filters.png`) is computed from the run files;
`timings.json` keeps the settings and each step's seconds. Every step is
skipped when its output exists, so an interrupted sweep continues where
it stopped (a training run resumes from its last epoch).
"""

import argparse
import json
import math
import os
import sys
import time

from export.cli import UsageError, prepare_tensorflow
from experiments import results_report, steps

prepare_tensorflow()  # before the steps import TensorFlow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "training/configs/fashion_mnist_hah_small.yaml"
SCALES = (0, 1, 10, 30, 100, 300)
SEEDS = (2022, 2023)
NOISE_SIGMAS = (0.1, 0.2, 0.3)
#: The measure that decides where the cost acts: noise accuracy at the
#: largest sigma (the standard network is below 50% there).
PRIMARY = "noise"
BUDGETS = {
    "full": {"train": [], "images": 2000},
    "tiny": {"train": ["--set", "epochs=1", "--set", "train_limit=256",
                       "--set", "validation_limit=64", "--set", "sparsity_images=16",
                       "--set", "lr_milestones=[]"],
             "images": 32},
}
BEGIN, END = "<!-- sweep:begin -->", "<!-- sweep:end -->"


def run_name(scale, seed):
    return f"x{scale:g}_s{seed}"


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
        raise ValueError(f"sweep: error: the config {config_path} must name a preset "
                         "with HaH blocks (e.g. hah_vgg_small)")
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


def _kernels(model_path):
    """`{HaH block name: kernel}` of a saved model."""
    import keras

    from keras_hebb.layers.hah_block import HaHBlock

    model = keras.models.load_model(model_path)
    return {layer.name: keras.ops.convert_to_numpy(layer.conv.kernel)
            for layer in model.layers if isinstance(layer, HaHBlock)}


def measures(out, name, reference):
    """One run's measures (a flat dict), or None if it is not finished.

    `reference` is the `{HaH block name: kernel}` of the x0 run of the
    same seed (the comparison for `kernel_change`), or None when that run
    has no model.
    """
    import numpy as np

    metrics = results_report.load_json(os.path.join(out, "runs", name, "metrics.json"))
    probed = results_report.load_json(os.path.join(out, "probe", f"{name}.json"))
    if not metrics or not probed:
        return None
    final = metrics["final"]
    row = {"test_accuracy": final.get("val_accuracy"), "clean": probed["clean"]}
    row.update({f"noise {sigma}": value for sigma, value in probed["noise"].items()})
    for layer in probed["layers"]:
        row[f"nonzero {layer['layer']}"] = layer["nonzero_fraction"]
        row[f"disparity {layer['layer']}"] = layer["disparity"]
    for key, value in final.items():
        if key.startswith("val_hah_") and key != "val_hah_cost":
            row[f"hah cost {key[len('val_hah_'):]}"] = value
    if reference is not None:
        mine = _kernels(os.path.join(out, "runs", name, "model.keras"))
        for block, kernel in mine.items():
            row[f"kernel change {block}"] = float(
                np.linalg.norm(kernel - reference[block]) / np.linalg.norm(reference[block]))
    return row


def _reference_kernels(out, seed, loaded):
    """The kernels of the x0 run of `seed` (None without its model), each
    seed's loaded once into the cache `loaded`."""
    if seed not in loaded:
        path = os.path.join(out, "runs", run_name(0, seed), "model.keras")
        loaded[seed] = _kernels(path) if os.path.exists(path) else None
    return loaded[seed]


def _sd(values):
    if len(values) < 2:
        return float("nan")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(out, scales, seeds):
    """Per scale and measure: values per seed, mean, sd, effect vs x0."""
    rows, references = {}, {}
    for scale in scales:
        for seed in seeds:
            row = measures(out, run_name(scale, seed),
                           _reference_kernels(out, seed, references))
            if row is not None:
                rows[(scale, seed)] = row
    keys = []
    for row in rows.values():
        keys += [k for k in row if k not in keys]
    table = []
    for scale in scales:
        per_seed = {seed: rows[(scale, seed)] for seed in seeds if (scale, seed) in rows}
        if not per_seed:
            continue
        entry = {"scale": scale, "seeds": sorted(per_seed), "measures": {}}
        for key in keys:
            values = [r[key] for r in per_seed.values() if r.get(key) is not None]
            if not values:
                continue
            stat = {"values": values, "mean": sum(values) / len(values), "sd": _sd(values)}
            deltas = [per_seed[s][key] - rows[(0, s)][key] for s in per_seed
                      if (0, s) in rows and rows[(0, s)].get(key) is not None
                      and per_seed[s].get(key) is not None]
            if deltas and scale != 0:
                base = [rows[(0, s)][key] for s in seeds
                        if (0, s) in rows and rows[(0, s)].get(key) is not None]
                spread = math.sqrt((_sd(base) ** 2 + stat["sd"] ** 2) / 2)
                effect = sum(deltas) / len(deltas)
                stat.update(effect=effect, spread=spread,
                            clear=bool(len(deltas) >= 2 and not math.isnan(spread)
                                       and abs(effect) > 2 * spread))
            entry["measures"][key] = stat
        table.append(entry)
    return table


def effect_measures(keys, sigmas):
    """The measures whose HaH effect is judged: noise accuracy at the largest
    sigma, clean accuracy, and each HaH block's disparity. (The kernel
    change is shown but not judged: any nonzero alpha moves the kernels
    somewhat, whether or not that changes what the network computes.)"""
    return [f"noise {max(sigmas):g}", "clean"] + [
        k for k in keys if k.startswith("disparity") and "hah" in k]


def first_clear(table, key):
    """The smallest scale whose effect on `key` is clear, or None."""
    for entry in table:
        if entry["measures"].get(key, {}).get("clear"):
            return entry["scale"]
    return None


def _fmt(value, percent):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}" if percent else f"{value:.3g}"


def _percent(key):
    return key in ("test_accuracy", "clean") or key.startswith(("noise", "nonzero"))


def _intro_lines(out, table, alphas, command):
    """The title, where the numbers come from, and what each measure is."""
    return [
        "# Alpha sweep: where does the HaH cost change the network?", "",
        f"Made by `{command}`; every number comes from the files in this folder "
        "(`runs/NAME/metrics.json`, `runs/NAME/model.keras`, `probe/NAME.json`). "
        f"Runs are named `x<scale>_s<seed>`: the HaH alphas are <scale> x "
        f"{[round(a, 6) for a in alphas]} (the paper's first alphas).", "",
        f"Test accuracy on the whole test set (from training); everything else on the first "
        f"{_images(out, table)} test images. Noise: accuracy under Gaussian noise (3 draws). "
        "Non-zero: fraction of non-zero activations. Disparity: mean of the top 10% of "
        "channels minus the mean of the others, per position. Kernel change: "
        "`||W - W0|| / ||W0||` of each HaH block's kernel against the x0 model of the same "
        "seed (same initial weights and batches). Values: mean ± sd over seeds; "
        "percentages for accuracies and non-zero fractions.", "",
        "## Measures per scale", "",
    ]


def _measure_lines(table, keys):
    """Each measure's mean ± sd per scale."""
    scales = [e["scale"] for e in table]
    lines = ["| measure | " + " | ".join(f"x{s:g}" for s in scales) + " |",
             "|---|" + "---|" * len(scales)]
    for key in keys:
        cells = []
        for entry in table:
            stat = entry["measures"].get(key)
            cells.append("n/a" if stat is None else
                         f"{_fmt(stat['mean'], _percent(key))} ± "
                         f"{_fmt(stat['sd'], _percent(key))}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _effect_lines(table, effect_keys):
    """The HaH effect per judged measure and scale, then where it gets clear."""
    scales = [e["scale"] for e in table]
    lines = ["", "## HaH effect (difference to x0 of the same seed)", "",
             "Effect: mean over seeds of (value - value at x0, same seed). Spread: pooled "
             "seed standard deviation of the measure at x0 and at the scale. **Bold**: "
             "effect larger than twice the spread (clear).", "",
             "| measure | " + " | ".join(f"x{s:g}" for s in scales if s != 0) + " |",
             "|---|" + "---|" * len([s for s in scales if s != 0])]
    for key in effect_keys:
        cells = []
        for entry in table:
            if entry["scale"] == 0:
                continue
            stat = entry["measures"].get(key, {})
            if "effect" not in stat:
                cells.append("n/a")
                continue
            text = (f"{_fmt(stat['effect'], _percent(key))} "
                    f"(spread {_fmt(stat['spread'], _percent(key))})")
            cells.append(f"**{text}**" if stat["clear"] else text)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
    if all(len(entry["seeds"]) < 2 for entry in table):
        # No seed spread, so no effect can be called clear (or not clear).
        return lines + ["- One seed: there is no seed spread to judge the effects "
                        "against; they are single differences, not findings."]
    for key in effect_keys:
        scale = first_clear(table, key)
        lines.append(f"- {key}: " + (f"the effect is clear from x{scale:g} on."
                                     if scale is not None else
                                     f"no scale up to x{max(scales):g} has a clear effect."))
    return lines


def write(out, table, alphas, sigmas, timings, command):
    """`OUT/sweep.md`, `sweep.json` and the plots; returns the Markdown path."""
    keys = [k for k in table[0]["measures"]] if table else []
    effect_keys = effect_measures(keys, sigmas)
    lines = _intro_lines(out, table, alphas, command)
    lines += _measure_lines(table, keys)
    lines += _effect_lines(table, effect_keys)
    lines += ["", "![HaH effect against alpha scale](sweep.png)", "",
              "![First HaH block's filters per scale](filters.png)", "",
              "## Time", "",
              f"Training and probing, in this folder's `timings.json`: "
              f"{_total_minutes(timings):.1f} min over {len(timings.get('calls', []))} "
              "call(s)."]
    path = os.path.join(out, "sweep.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"alphas": alphas, "table": table}, f, indent=1)
    _plot(out, table, effect_keys)
    _plot_filters(out, table)
    return path


def _images(out, table):
    for entry in table:
        for seed in entry["seeds"]:
            probed = results_report.load_json(
                os.path.join(out, "probe", f"{run_name(entry['scale'], seed)}.json"))
            if probed:
                return probed["images"]
    return "n/a"


def _total_minutes(timings):
    return sum(c["seconds"] for c in timings.get("calls", [])) / 60


def _plot(out, table, keys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for entry in table:
            stat = entry["measures"].get(key)
            if stat is None:
                continue
            x = max(entry["scale"], 0.3)  # x0 drawn at the left edge of the log axis
            scale = 100 if _percent(key) else 1
            ax.scatter([x] * len(stat["values"]), [scale * v for v in stat["values"]],
                       color="tab:blue", s=14)
            ax.errorbar([x], [scale * stat["mean"]], yerr=[scale * (stat["sd"] or 0)
                                                           if not math.isnan(stat["sd"])
                                                           else 0],
                        color="black", marker="_", markersize=12, capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("alpha scale (x0 drawn at 0.3)")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=110)
    plt.close(fig)


def _plot_filters(out, table):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = []
    for entry in table:
        path = os.path.join(out, "runs", run_name(entry["scale"], entry["seeds"][0]),
                            "model.keras")
        if os.path.exists(path):
            block, kernel = next(iter(_kernels(path).items()))
            rows.append((f"x{entry['scale']:g} s{entry['seeds'][0]}", kernel))
    if not rows:
        return
    count = min(16, rows[0][1].shape[-1])
    fig, axes = plt.subplots(len(rows), count, figsize=(count * 0.6, len(rows) * 0.7),
                             squeeze=False)
    for r, (label, kernel) in enumerate(rows):
        for c in range(count):
            ax = axes[r][c]
            k = kernel[:, :, 0, c] if kernel.shape[2] == 1 else np.mean(kernel[..., c], -1)
            ax.imshow(k, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("first HaH block: its first 16 filters per alpha scale", fontsize=9)
    fig.savefig(os.path.join(out, "filters.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)


def _parse_list(text, kind, what, low):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < low for v in values):
        raise SystemExit(f"sweep: error: {what} must be a comma-separated list of numbers "
                         f">= {low}, received {text!r}")
    return values


def _parser():
    parser = argparse.ArgumentParser(prog="python -m experiments sweep",
                                     description=__doc__.split("\n")[0])
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
                        help=f"also put the report into each DOC.md between its '{BEGIN}' "
                        f"and '{END}' lines")
    parser.add_argument("--section", default=None,
                        help="use the DOC.md lines '<!-- sweep-SECTION:begin -->' and "
                        "'<!-- sweep-SECTION:end -->' instead (several sweeps in one document)")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (tests)")
    return parser


def _settings(args, begin, end):
    """The checked `(scales, seeds, sigmas, budget, images, config path)` of
    the arguments; `UsageError` (its message the line to print) if wrong."""
    scales = sorted(set(_parse_list(args.scales, float, "--scales", 0)))
    scales = [int(s) if float(s).is_integer() else s for s in scales]
    if 0 not in scales:
        raise UsageError("sweep: error: --scales must include 0 (the model without the cost "
                         "is what the effect is measured against)")
    seeds = [int(s) for s in _parse_list(args.seeds, int, "--seeds", 0)]
    sigmas = _parse_list(args.noise_sigmas, float, "--noise-sigmas", 0)
    budget = BUDGETS["tiny" if args.tiny else "full"]
    images = args.images if args.images is not None else budget["images"]
    if images < 1:
        raise UsageError(f"sweep: error: --images must be >= 1, received {images}")
    config_path = os.path.join(ROOT, args.config) if not os.path.isabs(args.config) \
        and not os.path.exists(args.config) else args.config
    if not os.path.exists(config_path):
        raise UsageError(f"sweep: error: no config file {args.config}")
    for doc in args.docs:
        if not _has_markers(doc, begin, end):
            raise UsageError(f"sweep: error: {doc} has no '{begin}' and '{end}' lines")
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


def _copy_into_docs(docs, begin, end, path):
    """The report at `path` between the `begin` and `end` lines of each doc."""
    for doc in docs:
        with open(doc) as f:
            document = f.read()
        with open(doc, "w") as f:
            f.write(results_report.replace_between(document, begin, end, doc, path))
        print(f"Sweep tables copied into {doc}")


def main(argv=None):
    args = _parser().parse_args(argv)
    begin, end = markers(args.section)
    try:
        scales, seeds, sigmas, budget, images, config_path = _settings(args, begin, end)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    try:
        alphas = base_alphas(config_path)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    timings = results_report.load_json(os.path.join(out, "timings.json")) or {}
    timings["settings"] = {"config": os.path.relpath(config_path, ROOT), "alphas": alphas,
                           "scales": scales, "seeds": seeds, "images": images,
                           "noise_sigmas": sigmas, "tiny": bool(args.tiny)}
    if not args.report_only:
        _run_steps(out, config_path, scales, seeds, budget, alphas, images, sigmas, timings)
    table = summarize(out, scales, seeds)
    if not table:
        print("sweep: nothing finished yet to report", file=sys.stderr)
        return 1
    command = " ".join(["python -m training sweep",
                        *(argv if argv is not None else sys.argv[1:])])
    path = write(out, table, alphas, sigmas, timings, command)
    print(f"\nSweep report: {path}")
    _copy_into_docs(args.docs, begin, end, path)
    return 0


def markers(section=None):
    """The begin and end lines of the sweep's part of a document."""
    if section is None:
        return BEGIN, END
    return f"<!-- sweep-{section}:begin -->", f"<!-- sweep-{section}:end -->"


def _has_markers(doc, begin, end):
    if not os.path.exists(doc):
        return False
    with open(doc) as f:
        document = f.read()
    return begin in document and end in document


if __name__ == "__main__":
    sys.exit(main())
