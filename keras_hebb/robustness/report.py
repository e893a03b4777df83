"""Reports of a suite run: JSON, Markdown and PNG plots.

The plots go through `keras_hebb.plots` (matplotlib's object API: no
backend switch and no pyplot state, so a notebook's own plotting is left
as it was).
"""

import json
import os

import numpy as np

from keras_hebb import plots


def first_layer_kernel(model):
    """The first convolution's kernel `(kh, kw, in, out)` as numpy, or None.

    For a `HaHBlock` the kernel is its `conv.kernel` (shown as normalized
    by the plot); for a `Conv2D`, its `kernel`.
    """
    import keras

    from keras_hebb import _compat
    from keras_hebb.layers import HaHBlock

    for layer in _compat.all_layers(model):
        if isinstance(layer, HaHBlock):
            return keras.ops.convert_to_numpy(layer.conv.kernel)
        if isinstance(layer, keras.layers.Conv2D):
            return keras.ops.convert_to_numpy(layer.kernel)
    return None


def filter_grid(kernel, pad=1):
    """Tiles the filters of `kernel` `(kh, kw, in, out)` into one image.

    Each filter is scaled to [0, 1] on its own; 1 or 3 input channels give
    a gray or RGB tile, others show the mean over input channels.
    Returns an `(H, W)` or `(H, W, 3)` float array.
    """
    kh, kw, cin, cout = kernel.shape
    tiles = np.transpose(kernel, (3, 0, 1, 2))
    if cin not in (1, 3):
        tiles = tiles.mean(axis=-1, keepdims=True)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - low) / np.maximum(high - low, 1e-12)
    columns = int(np.ceil(np.sqrt(cout)))
    rows = int(np.ceil(cout / columns))
    channels = tiles.shape[-1]
    grid = np.ones((rows * (kh + pad) + pad, columns * (kw + pad) + pad, channels))
    for i in range(cout):
        r, c = divmod(i, columns)
        top, left = pad + r * (kh + pad), pad + c * (kw + pad)
        grid[top:top + kh, left:left + kw] = tiles[i]
    return grid[..., 0] if channels == 1 else grid


def _robust_curve(entry, norm):
    records = entry["attacks"].get(norm, [])
    budgets = [0.0] + [r["budget"] for r in records]
    accuracy = [entry["clean_accuracy"]] + [r["robust_accuracy"] for r in records]
    return budgets, accuracy


def plot_all(results, out_dir, kernels=None):
    """Writes the PNG plots; returns their file names."""
    models = results["models"]
    written = [_plot_noise(models, out_dir)]
    for norm, label in (("linf", "L-inf"), ("l2", "L2")):
        if any(entry["attacks"].get(norm) for entry in models.values()):
            written.append(_plot_robust(models, out_dir, norm, label))
    if any(entry.get("certified") for entry in models.values()):
        written.append(_plot_certified(models, out_dir))
    with_stats = {n: e["sparsity"] for n, e in models.items() if e.get("sparsity")}
    if with_stats:
        written.append(_plot_sparsity(with_stats, out_dir))
    for name, kernel in (kernels or {}).items():
        if kernel is not None:
            written.append(_plot_filters(name, kernel, out_dir))
    return written


def _save(fig, out_dir, file_name):
    """Lays out, writes and closes the figure; returns `file_name`."""
    plots.save(fig, os.path.join(out_dir, file_name), dpi=120)
    return file_name


def _plot_noise(models, out_dir):
    fig, ax = plots.figure(size=(5, 3.5))
    for name, entry in models.items():
        sigmas = [0.0] + [n["sigma"] for n in entry["noise"]]
        accuracy = [entry["clean_accuracy"]] + [n["accuracy"] for n in entry["noise"]]
        ax.plot(sigmas, accuracy, marker="o", label=name)
    ax.set(xlabel="Gaussian noise sigma (pixels in [0, 1])", ylabel="accuracy",
           ylim=(0, 1), title="Accuracy under noise")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir, "noise.png")


def _plot_robust(models, out_dir, norm, label):
    fig, ax = plots.figure(size=(5, 3.5))
    for name, entry in models.items():
        budgets, accuracy = _robust_curve(entry, norm)
        ax.plot(budgets, accuracy, marker="o", label=name)
    ax.set(xlabel=f"{label} budget (pixels in [0, 1])",
           ylabel="robust accuracy (worst case)", ylim=(0, 1),
           title=f"Robust accuracy, {label}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir, f"robust_{norm}.png")


def _plot_certified(models, out_dir):
    fig, ax = plots.figure(size=(5, 3.5))
    for name, entry in models.items():
        for c in entry.get("certified") or []:
            ax.plot(c["radii"], c["certified_accuracy"], marker="o",
                    label=f"{name}, sigma {c['sigma']:g}")
    ax.set(xlabel="L2 radius (pixels in [0, 1])", ylabel="certified accuracy",
           ylim=(0, 1), title="Randomized smoothing: certified accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "certified_l2.png")


def _plot_sparsity(with_stats, out_dir):
    fig, axes = plots.figure(1, len(with_stats), size=(4.5 * len(with_stats), 3.5),
                             squeeze=False)
    for ax, (name, stats) in zip(axes[0], with_stats.items()):
        layers = [s["layer"] for s in stats]
        ax.bar(range(len(layers)), [s["nonzero_fraction"] for s in stats])
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="fraction of non-zero activations", ylim=(0, 1), title=name)
    return _save(fig, out_dir, "sparsity.png")


def _plot_filters(name, kernel, out_dir):
    grid = filter_grid(kernel)
    fig, ax = plots.figure(size=(4, 4))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{name}: first-layer filters")
    return _save(fig, out_dir, f"filters_{_safe(name)}.png")


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def caps(suite):
    """The suite's caps in one sentence (those of the attacks it ran), from
    `report.json`'s settings: each attack's part (`registry.caps_line`)."""
    from keras_hebb.robustness import registry

    return registry.caps_line(suite)


def markdown(results):
    """The human-readable summary: tables of accuracies and checks."""
    models = results["models"]
    settings = results["settings"]
    lines = [
        "# Robustness report",
        "",
        f"Dataset `{settings.get('dataset', '?')}` ({settings['images']} images), "
        f"suite `{settings['name']}`, seed {settings['seed']}. Robust accuracy is the "
        "per-image worst case over every attack of the suite at each budget "
        "(budgets in [0, 1] pixel space). Caps: " + caps(settings) + "."
        + (" Escalation: a model with a sign of gradient masking is attacked again with "
           "Square at AutoAttack's 5,000 queries (see the checks)." if settings.get("escalate")
           else ""),
        "",
    ]
    names = list(models)
    lines += _noise_lines(models, names)
    for norm, label in (("linf", "L-inf"), ("l2", "L2")):
        if models[names[0]]["attacks"].get(norm):
            lines += _robust_lines(models, names, norm, label)
    lines += _certified_lines(settings, models, names)
    lines += _check_lines(models, names)
    if any(e.get("sparsity") for e in models.values()):
        lines += ["", "## Activations (clean images)", "",
                  "| model | layer | non-zero fraction | disparity |", "|---|---|---|---|"]
        for name in names:
            for s in models[name].get("sparsity") or []:
                lines.append(f"| {name} | {s['layer']} | {s['nonzero_fraction']:.3f} | "
                             f"{s['disparity']:.3f} |")
    lines += ["", "## Cost", "", "| model | seconds | seconds per image |", "|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {models[name]['seconds']} | "
                     f"{models[name]['seconds_per_image']} |")
    lines += ["", "Every setting (attack, budget, steps, restarts, images, seed) and "
              "every stage's count are in `report.json`.", ""]
    return "\n".join(lines)


def _noise_lines(models, names):
    lines = ["## Clean and noise accuracy", "",
             "| model | clean | " + " | ".join(
                 f"noise {n['sigma']:g}" for n in models[names[0]]["noise"]) + " |",
             "|---" * (2 + len(models[names[0]]["noise"])) + "|"]
    for name in names:
        entry = models[name]
        lines.append(f"| {name} | {_percent(entry['clean_accuracy'])} | " + " | ".join(
            _percent(n["accuracy"]) for n in entry["noise"]) + " |")
    return lines


def _robust_lines(models, names, norm, label):
    """The worst case per budget, then what each kind of attack adds."""
    budgets = [r["budget"] for r in models[names[0]]["attacks"][norm]]
    lines = ["", f"## Robust accuracy, {label} (worst case over the suite)", "",
             "| model | " + " | ".join(f"eps {b:g}" for b in budgets) + " |",
             "|---" * (1 + len(budgets)) + "|"]
    for name in names:
        records = models[name]["attacks"].get(norm, [])
        lines.append(f"| {name} | " + " | ".join(
            _percent(r["robust_accuracy"]) for r in records) + " |")
    lines += ["", f"What each kind of attack adds ({label}). Each column is its own "
              "per-image worst case with its own carry-over across budgets: gradient "
              "only = the cleverhans gradient attacks; + APGD = with AutoAttack's "
              "APGD-CE/APGD-T; + BPDA = with the surrogate-gradient attack; + black "
              "box = with Square, transfer, SPSA (the worst case). Paper protocol = "
              "APGD-CE + APGD-T alone; overstates = paper protocol - worst case:", "",
              "| model | budget | gradient only | + APGD | + BPDA | + black box "
              "(worst case) | paper protocol | overstates |",
              "|---|---|---|---|---|---|---|---|"]
    for name in names:
        for r in models[name]["attacks"].get(norm, []):
            columns = r.get("columns", {})
            over = r.get("paper_protocol_overstates")
            lines.append(
                f"| {name} | {r['budget']:g} | {_percent(columns.get('gradient_only'))} | "
                f"{_percent(columns.get('plain_gradients'))} | "
                f"{_percent(columns.get('white_box'))} | "
                f"{_percent(columns.get('worst_case'))} | "
                f"{_percent(columns.get('paper_protocol'))} | "
                f"{'-' if over is None else f'{100 * over:+.1f} points'} |")
    return lines


def _certified_lines(settings, models, names):
    certify = settings.get("certify")
    if not certify or not any(models[n].get("certified") for n in names):
        return []
    radii = certify["radii"]
    lines = ["", "## Certified L2 robustness (randomized smoothing)", "",
             f"Cohen et al. 2019 CERTIFY on the first {certify['images']} images: "
             f"n0 = {certify['n0']}, n = {certify['n']} Gaussian draws, "
             f"Clopper-Pearson bound at alpha = {certify['alpha']:g}; certified "
             "accuracy = correct smoothed prediction with a certified radius >= r "
             "(no attack can lower it, with probability >= 1 - alpha per image):", "",
             "| model | sigma | abstained | " + " | ".join(f"r {r:g}" for r in radii)
             + " |", "|---" * (3 + len(radii)) + "|"]
    for name in names:
        for c in models[name].get("certified") or []:
            lines.append(f"| {name} | {c['sigma']:g} | {_percent(c['abstained'])} | "
                         + " | ".join(_percent(v) for v in c["certified_accuracy"]) + " |")
    return lines


def _check_lines(models, names):
    """Pass or fail per model and check, then what each check means."""
    lines = ["", "## Sanity checks", "",
             "| model | " + " | ".join(models[names[0]]["checks"]) + " |",
             "|---" * (1 + len(models[names[0]]["checks"])) + "|"]
    for name in names:
        checks = models[name]["checks"]
        lines.append(f"| {name} | " + " | ".join(
            _check_cell(c) for c in checks.values()) + " |")
    lines += [""]
    for key, check in models[names[0]]["checks"].items():
        lines.append(f"- `{key}`: {check['meaning']}.")
    failures = [f"- {name}, `{key}`: {check['message']}." for name in names
                for key, check in models[name]["checks"].items()
                if check.get("passed") is False and check.get("message")]
    escalated = [f"- {name}: {', '.join(models[name]['escalation']['signs'])}." for name in names
                 if (models[name].get("escalation") or {}).get("ran")]
    if escalated:
        lines += ["", "Signs of gradient masking (every budget attacked again with Square at "
                  "AutoAttack's strength, counted in the worst case):", ""] + escalated
    if failures:
        lines += ["", "Failed checks, with the gap each names:", ""] + failures
    return lines


def _check_cell(check):
    # Reports written before checks could be left unrun have no `status`.
    status = check.get("status") or ("pass" if check["passed"] else "fail")
    return {"pass": "pass", "fail": "**FAIL**"}.get(status, status)


def write_report(results, out_dir, kernels=None):
    """Writes `report.json`, `report.md` and the plots into `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(results))
    return ["report.json", "report.md"] + plot_all(results, out_dir, kernels)
