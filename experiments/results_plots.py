"""The plots of `python -m experiments results` (`OUT/*.png`): accuracy
against noise, attack budget and certified radius, and the non-zero
activations per layer; each network's mean ± sd over seeds, each ablation.
"""

import os

import numpy as np

from keras_hebb import plots


#: One per seeded network (the defenses experiment has 8).
_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
_MARKERS = "osd^v<>ph*"


def _figure_done(fig, ax, out, filename):
    """Finishes a 0-100 % plot (grid, legend) and saves it as `filename`."""
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plots.save(fig, os.path.join(out, filename), dpi=110)


def _plot_curve(out, summary, ablations, curve):
    """One accuracy-against-strength plot: each group's mean ± sd, each ablation."""
    key, xlabel, filename, norm = curve
    groups = summary["groups"]
    fig, ax = plots.figure(size=(6, 4))
    for base, color in zip(groups, _COLORS):
        data = groups[base].get(key)
        if not data:
            continue
        data = data[norm] if norm else data
        xs = sorted(data)
        mean = np.array([data[x]["mean"] for x in xs]) * 100
        spread = np.array([data[x]["std"] for x in xs]) * 100
        ax.plot(xs, mean, "o-", color=color,
                label=f"{base} (mean of {len(groups[base]['seeds'])} seeds)")
        ax.fill_between(xs, mean - spread, mean + spread, color=color, alpha=0.2)
    for model in ablations:
        if not model.get(key):
            continue
        data = model[key][norm] if norm else model[key]
        xs = sorted(data)
        ax.plot(xs, [100 * data[x] for x in xs], "--", marker=".", label=model["name"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel({"noise": "accuracy (%)", "certified": "certified accuracy (%)"}.get(
        key, "robust accuracy, worst case (%)"))
    _figure_done(fig, ax, out, filename)


def _plot_sparsity(out, summary, ablations):
    """sparsity.png: non-zero activations per layer, each group and ablation."""
    fig, ax = plots.figure(size=(6, 4))
    for base, marker in zip(summary["groups"], _MARKERS):
        data = summary["groups"][base].get("nonzero")
        if data:
            layers = list(data)
            ax.plot(range(len(layers)), [100 * data[layer]["mean"] for layer in layers],
                    marker=marker, label=base)
    for model in ablations:
        layers = list(model["nonzero"])
        ax.plot(range(len(layers)), [100 * model["nonzero"][layer] for layer in layers],
                "--", marker=".", label=model["name"])
    ax.set_xlabel("activation layer (model order)")
    ax.set_ylabel("non-zero activations (%)")
    _figure_done(fig, ax, out, "sparsity.png")


def plot(out, summary):
    """noise.png, robust_linf.png, robust_l2.png, sparsity.png; returns names."""
    written = []
    groups = summary["groups"]
    ablations = [summary["models"][n] for n in summary["ablations"]
                 if "clean" in summary["models"][n]]
    curves = [("noise", "Gaussian noise sigma", "noise.png", None)]
    if any(g.get("certified") for g in groups.values()):
        curves.append(("certified", "L2 radius (certified, randomized smoothing)",
                       "certified.png", None))
    norms = next((list(g["robust"]) for g in groups.values() if g.get("robust")), [])
    curves += [("robust", f"{norm} budget (pixels in [0, 1])", f"robust_{norm}.png", norm)
               for norm in norms]
    for curve in curves:
        _plot_curve(out, summary, ablations, curve)
        written.append(curve[2])
    if any(m.get("nonzero") for m in summary["models"].values()):
        _plot_sparsity(out, summary, ablations)
        written.append("sparsity.png")
    return written


