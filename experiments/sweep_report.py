"""The report of `python -m experiments sweep`: `OUT/sweep.md`,
`sweep.json`, `sweep.png` and `filters.png`, computed from the run files
(`runs/NAME/metrics.json`, `runs/NAME/model.keras`, `probe/NAME.json`).

The HaH effect of a measure at a scale is its mean over seeds of the
difference to the x0 model of the same seed. It counts as clear when it
is larger than twice the seed spread: the pooled standard deviation over
seeds of the measure at x0 and at that scale.
"""

import json
import math
import os

from experiments.steps import load_json
from keras_hebb import plots


def run_name(scale, seed):
    return f"x{scale:g}_s{seed}"


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

    metrics = load_json(os.path.join(out, "runs", name, "metrics.json"))
    probed = load_json(os.path.join(out, "probe", f"{name}.json"))
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
            probed = load_json(
                os.path.join(out, "probe", f"{run_name(entry['scale'], seed)}.json"))
            if probed:
                return probed["images"]
    return "n/a"


def _total_minutes(timings):
    return sum(c["seconds"] for c in timings.get("calls", [])) / 60


def _plot(out, table, keys):
    """sweep.png: each judged measure against the scale, per seed and mean ± sd."""
    fig, axes = plots.figure(1, len(keys), size=(4 * len(keys), 3.2), squeeze=False)
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
    plots.save(fig, os.path.join(out, "sweep.png"), dpi=110)


def _plot_filters(out, table):
    """filters.png: the first HaH block's first 16 filters, a row per scale
    (the first seed's model), each filter scaled on its own."""
    from keras_hebb.robustness.report import filter_grid

    rows = []
    for entry in table:
        path = os.path.join(out, "runs", run_name(entry["scale"], entry["seeds"][0]),
                            "model.keras")
        if os.path.exists(path):
            kernel = next(iter(_kernels(path).values()))
            rows.append((f"x{entry['scale']:g} s{entry['seeds'][0]}", kernel))
    if not rows:
        return
    count = min(16, rows[0][1].shape[-1])
    fig, axes = plots.figure(len(rows), count, size=(count * 0.6, len(rows) * 0.7),
                             squeeze=False)
    for r, (label, kernel) in enumerate(rows):
        for c in range(count):
            ax = axes[r][c]
            ax.imshow(filter_grid(kernel[..., c:c + 1], pad=0), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("first HaH block: its first 16 filters per alpha scale", fontsize=9)
    plots.save(fig, os.path.join(out, "filters.png"), dpi=110, tight_box=True)
