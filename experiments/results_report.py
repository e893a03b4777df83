"""The report of `python -m experiments results`: tables, goals and plots.

Reads only the files the steps wrote (`OUT/runs/NAME/metrics.json`,
`OUT/eval/NAME/report.json`); writes `OUT/results.json`, `OUT/results.md`
and `OUT/*.png`. Accuracies are fractions in the JSON, percentages in
the Markdown; a spread is the sample standard deviation over seeds.
"""

import json
import os

import numpy as np

from experiments import certified


def load_json(path):
    """The JSON document at `path`, or None when missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


#: Suite settings the report states next to its numbers (every cap).
_SUITE_KEYS = ("attacks", "steps", "restarts", "mim_steps", "transfer_steps", "bpda_modes",
               "cw_steps", "cw_binary_steps", "cw_images", "spsa_steps", "spsa_samples",
               "spsa_images", "apgd_steps", "apgd_restarts", "apgd_targets",
               "square_queries")


def _model_summary(out, name, base, seed, description):
    summary = {"name": name, "base": base, "seed": seed, "description": description}
    metrics = load_json(os.path.join(out, "runs", name, "metrics.json"))
    if metrics and metrics.get("final"):
        final = metrics["final"]
        summary["test_accuracy"] = final.get("val_accuracy")
        summary["test_images"] = metrics.get("run", {}).get("validation_examples")
        if "weight_sparsity" in final:
            summary["weight_sparsity"] = final["weight_sparsity"]
    report = load_json(os.path.join(out, "eval", name, "report.json"))
    # The evaluated model is the one whose file is this run's model.
    files = (report or {}).get("settings", {}).get("model_files", {})
    label = next((k for k, v in files.items()
                  if os.path.basename(os.path.dirname(os.path.abspath(v))) == name), None)
    entry = (report or {}).get("models", {}).get(label)
    if entry is None:
        return summary
    summary["images"] = report["settings"]["images"]
    summary["suite"] = {k: report["settings"].get(k) for k in _SUITE_KEYS}
    summary["clean"] = entry["clean_accuracy"]
    summary["noise"] = {float(n["sigma"]): n["accuracy"] for n in entry["noise"]}
    summary["robust"], summary["gradient_only"], summary["paper_protocol"] = {}, {}, {}
    for norm, records in entry["attacks"].items():
        summary["robust"][norm] = {float(r["budget"]): r["robust_accuracy"] for r in records}
        summary["gradient_only"][norm] = {
            float(r["budget"]): r["accuracy_after_gradient"] for r in records}
        # None for reports made before the suite had the paper's protocol.
        summary["paper_protocol"][norm] = {
            float(r["budget"]): (r.get("columns") or {}).get("paper_protocol")
            for r in records}
    summary["checks_failed"] = sorted(k for k, c in entry["checks"].items() if not c["passed"])
    summary["nonzero"] = {s["layer"]: s["nonzero_fraction"]
                          for s in entry.get("sparsity") or []}
    summary["evaluation_seconds"] = entry["seconds"]
    if entry.get("certified"):
        # Per sigma, and the envelope over sigmas (the best sigma at each
        # radius, as randomized smoothing is usually reported).
        summary["certified_per_sigma"] = {
            float(c["sigma"]): dict(zip(map(float, c["radii"]), c["certified_accuracy"]))
            for c in entry["certified"]}
        radii = sorted({r for c in summary["certified_per_sigma"].values() for r in c})
        summary["certified"] = {r: max(c.get(r, 0.0)
                                       for c in summary["certified_per_sigma"].values())
                                for r in radii}
        summary["certify"] = report["settings"].get("certify")
    return summary


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def _hah_layers(summary):
    """Names of the HaH blocks' activations and of the same standard layers."""
    hah = [layer for layer in summary.get("nonzero", {}) if layer.endswith("_hah")]
    return hah, [layer[: -len("_hah")] + "_relu" for layer in hah]


def _group(models):
    """Mean and spread of every number over the models of one network."""
    done = [m for m in models if "clean" in m]
    group = {"seeds": [m["seed"] for m in done],
             "test_accuracy": _stats([m.get("test_accuracy") for m in done]),
             "clean": _stats([m["clean"] for m in done])}
    if not done:
        return group
    group["noise"] = {s: _stats([m["noise"].get(s) for m in done]) for s in done[0]["noise"]}
    group["robust"] = {norm: {e: _stats([m["robust"][norm].get(e) for m in done])
                              for e in budgets}
                       for norm, budgets in done[0]["robust"].items()}
    group["nonzero"] = {layer: _stats([m["nonzero"].get(layer) for m in done])
                        for layer in done[0]["nonzero"]}
    group["paper_protocol"] = {
        norm: {e: _stats([_paper(m, norm, e) for m in done]) for e in budgets}
        for norm, budgets in done[0]["robust"].items()}
    group["overstates"] = {
        norm: {e: _stats([_overstates(m, norm, e) for m in done]) for e in budgets}
        for norm, budgets in done[0]["robust"].items()}
    if all(m.get("certified") for m in done):
        group["certified"] = {r: _stats([m["certified"].get(r) for m in done])
                              for r in done[0]["certified"]}
    return group


def family(run):
    """The network a run is a seed of (`hah` for `hah_s2022`, `hah_alpha0`
    for `hah_alpha0_s2022`), or None for a one-seed ablation."""
    name, _, _, seed, _, _ = run
    suffix = f"_s{seed}"
    return name[: -len(suffix)] if name.endswith(suffix) else None


def _paper(model, norm, eps):
    return model.get("paper_protocol", {}).get(norm, {}).get(eps)


def _overstates(model, norm, eps):
    """Paper protocol minus worst case (a fraction), or None without it."""
    paper, worst = _paper(model, norm, eps), model["robust"][norm].get(eps)
    return None if paper is None or worst is None else paper - worst


def collect(out, runs):
    """`results.json` content from the finished steps of `runs`
    (`experiments.results.plan`)."""
    models = {name: _model_summary(out, name, base, seed, description)
              for name, base, _, seed, _, description in runs}
    mains = [r for r in runs if family(r)]
    names = list(dict.fromkeys(["standard", "hah"] + [family(r) for r in mains]))
    groups = {name: _group([models[r[0]] for r in mains if family(r) == name])
              for name in names}
    summary = {"models": models, "groups": groups,
               "ablations": [r[0] for r in runs if r not in mains]}
    hah_examples = [m for m in models.values() if m["base"] == "hah" and m.get("nonzero")]
    if hah_examples:
        hah_names, std_names = _hah_layers(hah_examples[0])
        summary["hah_layers"], summary["standard_layers"] = hah_names, std_names
        for model in models.values():
            names = hah_names if model["base"] == "hah" else std_names
            values = [model.get("nonzero", {}).get(layer) for layer in names]
            if values and all(v is not None for v in values):
                model["nonzero_first_layers"] = float(np.mean(values))
        for name, group in groups.items():
            group["nonzero_first_layers"] = _stats(
                [models[r[0]].get("nonzero_first_layers") for r in mains if family(r) == name])
    summary["paired"] = paired(summary)
    twins = cost_twins(summary)
    if twins:
        summary["cost_twins"] = twins
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    return summary


def _measures(model):
    """A model's numbers by label, fractions: clean, noise, robust, certified."""
    values = {"clean": model.get("clean")}
    values.update({f"noise σ={s:g}": v for s, v in model.get("noise", {}).items()})
    for norm, budgets in model.get("robust", {}).items():
        symbol = "L∞" if norm == "linf" else "L2"
        values.update({f"{symbol} {e:g}": v for e, v in budgets.items()})
    values.update({f"certified L2 {r:g}": v for r, v in model.get("certified", {}).items()
                   if r > 0})
    return values


def _seed_differences(models, first, second):
    """`first` minus `second` (family names), seed by seed: `{"seeds": [...],
    "measures": {measure: stats}}`, or None when no seed has both."""
    def by_seed(name):
        return {m["seed"]: m for m in models
                if m["name"] == f"{name}_s{m['seed']}" and "clean" in m}
    mine, theirs = by_seed(first), by_seed(second)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    mine = {s: _measures(mine[s]) for s in seeds}
    theirs = {s: _measures(theirs[s]) for s in seeds}
    return {"seeds": seeds, "measures": {
        key: _stats([mine[s][key] - theirs[s][key] for s in seeds
                     if mine[s].get(key) is not None and theirs[s].get(key) is not None])
        for key in mine[seeds[0]]}}


def paired(summary):
    """HaH minus each other seeded network, seed by seed: `{other: {measure:
    stats}}` (fractions). Same seed, same images, same noise and attack
    draws, so the spread is that of the differences, not of the networks."""
    models = list(summary["models"].values())
    result = {}
    for name in summary["groups"]:
        if name != "hah":
            entry = _seed_differences(models, "hah", name)
            if entry:
                result[name] = entry
    return result


def cost_twins(summary):
    """What the HaH cost adds to a seeded HaH variant: each family `X` other
    than `hah` with an `X_alpha0` family beside it (the same network, seeds
    and batches with the cost's weights at 0), as `X` minus `X_alpha0`."""
    models = list(summary["models"].values())
    result = {}
    for name in summary["groups"]:
        if name != "hah" and f"{name}_alpha0" in summary["groups"]:
            entry = _seed_differences(models, name, f"{name}_alpha0")
            if entry:
                result[name] = entry
    return result


def _mean(stat):
    return None if stat is None else stat["mean"]


def goals(summary, targets):
    """Each goal of the HaH network against the standard one: rows of
    `(goal, where, standard, hah, difference, target, met)`; numbers in
    percent (points), `met` None when it cannot be decided."""
    std, hah = summary["groups"]["standard"], summary["groups"]["hah"]
    rows = []
    if not std.get("clean") or not hah.get("clean"):
        return rows

    def row(goal, where, a, b, target, met):
        rows.append({"goal": goal, "where": where, "standard": a, "hah": b,
                     "difference": None if a is None or b is None else b - a,
                     "target": target, "met": met})

    a, b = 100 * _mean(std["test_accuracy"]), 100 * _mean(hah["test_accuracy"])
    row("clean accuracy", "test set, mean over seeds", a, b,
        f">= -{targets['clean_drop_max']:g}", b - a >= -targets["clean_drop_max"])
    below = [s for s in sorted(std["noise"]) if _mean(std["noise"][s]) < 0.5]
    if below:
        sigma = below[0]
        a, b = 100 * _mean(std["noise"][sigma]), 100 * _mean(hah["noise"][sigma])
        row("Gaussian noise", f"sigma {sigma:g} (standard falls below 50%)", a, b,
            f">= +{targets['noise_gain_min']:g}", b - a >= targets["noise_gain_min"])
    else:
        row("Gaussian noise", "no sigma takes the standard network below 50%",
            None, None, f">= +{targets['noise_gain_min']:g}", None)
    low, high = targets["robust_band"]
    for norm, budgets in std["robust"].items():
        inside = [e for e in sorted(budgets) if low <= _mean(budgets[e]) <= high]
        where = "eps {:g} (worst case over the suite)"
        if not inside:
            # No budget in the band: the one nearest to it.
            distance = {e: max(low - _mean(budgets[e]), _mean(budgets[e]) - high)
                        for e in budgets}
            inside = [min(sorted(budgets), key=distance.get)]
            where = (f"eps {{:g}} (no budget takes the standard network to "
                     f"{low:.0%}-{high:.0%}; the nearest)")
        for eps in inside:
            a = 100 * _mean(budgets[eps])
            b = 100 * _mean(hah["robust"][norm][eps])
            row(f"robust accuracy ({norm})", where.format(eps),
                a, b, f">= +{targets['robust_gain_min']:g}",
                b - a >= targets["robust_gain_min"])
    a, b = std.get("nonzero_first_layers"), hah.get("nonzero_first_layers")
    if a and b:
        ratio = b["mean"] / a["mean"]
        rows.append({"goal": "non-zero activations", "where":
                     f"layers {', '.join(summary['hah_layers'])} (ratio HaH / standard)",
                     "standard": 100 * a["mean"], "hah": 100 * b["mean"],
                     "difference": ratio, "target": f"ratio <= {targets['nonzero_ratio_max']:g}",
                     "met": ratio <= targets["nonzero_ratio_max"]})
    return rows


def _pct(stat):
    if stat is None:
        return "-"
    if isinstance(stat, dict):
        if stat["n"] > 1:
            return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat:.1f}"


#: Radii of the certified accuracy in the main tables (all in the
#: certification section).
TABLE_RADII = (0.25, 0.5)


def _columns(summary):
    reference = next((m for m in summary["models"].values() if "clean" in m), None)
    if reference is None:
        return [], []
    noise = sorted(reference["noise"])
    robust = [(norm, eps) for norm in reference["robust"] for eps in sorted(reference["robust"][norm])]
    return noise, robust


def _certified_radii(summary):
    if not any(m.get("certified") for m in summary["models"].values()):
        return []
    return list(TABLE_RADII)


def _table(rows, noise, robust, radii=()):
    header = (["model", "seeds", "test acc.", "clean (eval images)"]
              + [f"noise σ={s:g}" for s in noise]
              + [f"{'L∞' if n == 'linf' else 'L2'} {e:g}" for n, e in robust]
              + [f"certified L2 {r:g}" for r in radii]
              + ["non-zero (HaH layers)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, seeds, item in rows:
        def get(key, *path):
            value = item.get(key)
            for p in path:
                value = None if value is None else value.get(p)
            return value
        cells = [label, seeds, _pct(get("test_accuracy")), _pct(get("clean"))]
        cells += [_pct(get("noise", s)) for s in noise]
        cells += [_pct(get("robust", n, e)) for n, e in robust]
        cells += [_pct(get("certified", r)) for r in radii]
        cells += [_pct(get("nonzero_first_layers"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _points(stat):
    """A difference of fractions in signed points (mean ± spread), or n/a."""
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{100 * stat['mean']:+.1f} ± {100 * stat['std']:.1f}"
    return f"{100 * stat['mean']:+.1f}"


def _paper_tables(rows, robust):
    """Per norm: worst case / paper protocol (overstatement) at each budget.

    `rows` are `(label, seeds, item)` with `item` a group (statistics) or a
    model (fractions); a report without the paper's column shows n/a.
    """
    lines = []
    for norm in dict.fromkeys(n for n, _ in robust):
        budgets = [e for n, e in robust if n == norm]
        symbol = "L∞" if norm == "linf" else "L2"
        header = ["model", "seeds"] + [f"{symbol} {e:g}" for e in budgets]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label, seeds, item in rows:
            cells = [label, seeds]
            for eps in budgets:
                worst = item.get("robust", {}).get(norm, {}).get(eps)
                paper = item.get("paper_protocol", {}).get(norm, {}).get(eps)
                if "overstates" in item:  # a group
                    over = item["overstates"][norm].get(eps)
                else:
                    over = _overstates(item, norm, eps) if worst is not None else None
                    over = None if over is None else {"mean": over, "std": 0.0, "n": 1}
                paper_text = "n/a" if paper is None else _pct(paper)
                cells.append(f"{_pct(worst)} / {paper_text} ({_points(over)})")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _difference_rows(pairs, keys, label):
    """Table rows of seed-by-seed differences; bold when clear (> 2 sd)."""
    lines = []
    for name, entry in pairs.items():
        cells = []
        for key in keys:
            stat = entry["measures"].get(key)
            text = _points(stat)
            clear = stat is not None and stat["n"] > 1 and abs(stat["mean"]) > 2 * stat["std"]
            cells.append(f"**{text}**" if clear else text)
        lines.append(f"| {label(name)} | {', '.join(map(str, entry['seeds']))} | "
                     + " | ".join(cells) + " |")
    return lines


def _paired_lines(summary):
    """What HaH adds: HaH minus each other seeded network, seed by seed; and
    what the cost adds to each seeded variant with an alpha = 0 twin."""
    pairs = summary.get("paired") or {}
    if not pairs:
        return []
    keys = list(next(iter(pairs.values()))["measures"])
    lines = ["", "## What HaH adds, seed by seed", "",
             "HaH minus the other network of the same seed, on the same images, noise "
             "draws and attacks, in points: mean ± sample standard deviation over the "
             "seeds. A difference is **bold** when it is larger than twice its spread "
             "(with 2 or more seeds).", "",
             "| HaH minus | seeds | " + " | ".join(keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    lines += _difference_rows(pairs, keys, lambda name: name)
    twins = summary.get("cost_twins") or {}
    if twins:
        lines += ["", "What the HaH cost adds to the other variants: each one minus its "
                  "twin with the cost's weights at 0 (same seeds and batches), in the "
                  "same units.", "",
                  "| variant minus its alpha = 0 twin | seeds | " + " | ".join(keys) + " |",
                  "|" + "---|" * (len(keys) + 2)]
        lines += _difference_rows(twins, keys, lambda name: f"{name} - {name}_alpha0")
    return lines


def _certified_lines(summary):
    """Certified accuracy per model and sigma (randomized smoothing)."""
    certified = [m for m in summary["models"].values() if m.get("certified_per_sigma")]
    if not certified:
        return []
    radii = sorted(certified[0]["certified"])
    lines = ["", "## Certified robustness (randomized smoothing)", "",
             "Certified L2 accuracy at each radius: the share of images the smoothed "
             "classifier gets right with a certificate at least that large. Per noise level "
             "σ of the smoothing; no attack can lower these numbers (up to the stated "
             "failure probability per image).", "",
             "| model | σ | " + " | ".join(f"r={r:g}" for r in radii) + " |",
             "|" + "---|" * (len(radii) + 2)]
    for model in certified:
        for sigma, row in sorted(model["certified_per_sigma"].items()):
            lines.append(f"| {model['name']} | {sigma:g} | "
                         + " | ".join(_pct(row.get(r)) for r in radii) + " |")
    return lines


def _suite_caps(suite):
    from keras_hebb.robustness.report import caps

    return caps(suite)


def _figure_done(fig, ax, out, filename):
    """Finishes a 0-100 % plot (grid, legend) and saves it as `filename`."""
    import matplotlib.pyplot as plt

    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, filename), dpi=110)
    plt.close(fig)


def _plot_curve(out, summary, ablations, curve):
    """One accuracy-against-strength plot: each group's mean ± sd, each ablation."""
    import matplotlib.pyplot as plt

    key, xlabel, filename, norm = curve
    groups = summary["groups"]
    fig, ax = plt.subplots(figsize=(6, 4))
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
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for base, marker in zip(summary["groups"], "osd^v<>"):
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
    import matplotlib

    matplotlib.use("Agg")

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


def _intro_lines(summary, command, missing):
    """The title, where the numbers come from, and what was measured how."""
    models = summary["models"]
    lines = ["# Results: standard vs HaH network on Fashion-MNIST", "",
             f"Made by `{command}`; every number comes from the files in this folder "
             "(`runs/NAME/metrics.json`, `eval/NAME/report.json`).", ""]
    if missing:
        lines += [f"**Incomplete**: not evaluated yet: {', '.join(missing)}.", ""]
    reference = next((m for m in models.values() if "clean" in m), None)
    if reference is not None:
        lines += [f"Test accuracy on the whole test set (from training); everything else "
                  f"on the first {reference['images']} test images, the same for every "
                  f"model. Robust accuracy: per-image worst case over the suite "
                  f"(attacks {', '.join(reference['suite']['attacks'] or [])}; "
                  f"caps: {_suite_caps(reference['suite'])}). Mean ± sample standard "
                  "deviation over seeds.", ""]
    if _certified_radii(summary):
        certify = next(m["certify"] for m in models.values() if m.get("certified"))
        lines += [f"Certified L2 accuracy: randomized smoothing (CERTIFY, Clopper-Pearson, "
                  f"n0 = {certify['n0']}, n = {certify['n']}, failure probability "
                  f"{certify['alpha']:g} per image) on the first {certify['images']} "
                  f"images, the best of σ = {', '.join(f'{x:g}' for x in certify['sigmas'])} "
                  "at each radius; it holds against every attack.", ""]
    return lines


def _goal_lines(summary, targets):
    """The goals table (HaH against standard), or nothing without goals."""
    rows = goals(summary, targets)
    if not rows:
        return []
    lines = ["", "## Goals (HaH against standard)", "",
             "| goal | where | standard | HaH | difference | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v: "-" if v is None else f"{v:.1f}")
        difference = "-" if r["difference"] is None else (
            f"{r['difference']:.2f}" if r["goal"] == "non-zero activations"
            else f"{r['difference']:+.1f}")
        met = {True: "yes", False: "**no**", None: "undecided"}[r["met"]]
        lines.append(f"| {r['goal']} | {r['where']} | {fmt(r['standard'])} | "
                     f"{fmt(r['hah'])} | {difference} | {r['target']} | {met} |")
    return lines


def _ablation_lines(summary, group_rows, noise, robust, radii):
    """Each ablation described, then tabled next to the groups."""
    models = summary["models"]
    if not summary["ablations"]:
        return []
    lines = ["", "## Ablations (one seed)", ""]
    lines += [f"- `{n}`: {models[n]['description']}"
              + (f" (weights pruned: {100 * models[n]['weight_sparsity']:.1f}%)"
                 if "weight_sparsity" in models[n] else "") for n in summary["ablations"]]
    return lines + [""] + _table(
        group_rows + [(n, str(models[n]["seed"]), models[n]) for n in summary["ablations"]],
        noise, robust, radii)


def _paper_protocol_lines(summary, group_rows, robust):
    """Worst case against the paper's protocol: per group, then per model."""
    lines = ["", "## The paper's protocol against the worst case", "",
             "Each cell: worst case / the paper's protocol (APGD-CE + APGD-T, 1 "
             "restart, at the suite's caps above; its own per-image cascade) and, in "
             "brackets, how much the paper's protocol overstates robustness (paper "
             "minus worst case, in points). n/a: the report predates the "
             "paper-protocol column (or the suite ran without APGD).", ""]
    lines += ["Mean ± sample standard deviation over seeds (the overstatement's spread "
              "is that of the per-seed differences):"]
    lines += _paper_tables(group_rows, robust)
    lines += ["", "Each model:"]
    return lines + _paper_tables([(m["name"], str(m["seed"]), m)
                                  for m in summary["models"].values() if "clean" in m], robust)


def _masking_lines(summary, robust):
    """Gradient attacks alone against the whole suite, where they differ."""
    lines = ["", "## Gradient masking check", "",
             "Robust accuracy after the plain gradient attacks only, and the worst case "
             "over the whole suite (APGD, BPDA and the black-box attacks added). A large "
             "gap means plain gradients alone would have overstated robustness.", "",
             "| model | budget | gradient attacks only | worst case | failed sanity checks |",
             "|---|---|---|---|---|"]
    for model in summary["models"].values():
        if "clean" not in model:
            continue
        for norm, eps in robust:
            worst = model["robust"][norm].get(eps)
            plain = model["gradient_only"][norm].get(eps)
            if worst is None or plain is None or plain - worst < 0.01:
                continue
            lines.append(f"| {model['name']} | {norm} {eps:g} | {_pct(plain)} | {_pct(worst)} "
                         f"| {', '.join(model['checks_failed']) or 'none'} |")
        if not any(model["gradient_only"][n].get(e, 0) - model["robust"][n].get(e, 0) >= 0.01
                   for n, e in robust):
            lines.append(f"| {model['name']} | every budget | within 1 point | | "
                         f"{', '.join(model['checks_failed']) or 'none'} |")
    return lines


def _wall_time_lines(timings):
    """Total, training and evaluation minutes over the recorded steps."""
    steps = {k: v for k, v in timings.items() if k != "calls"}
    if not steps:
        return []
    return ["", "## Wall time", "",
            f"{sum(steps.values()) / 60:.1f} min over all steps "
            f"(training {sum(v for k, v in steps.items() if k.startswith('train')) / 60:.1f} "
            f"min, evaluation "
            f"{sum(v for k, v in steps.items() if k.startswith('evaluate')) / 60:.1f} min), "
            "2 CPU cores; `timings.json` has each step.", ""]


def _write_summary(out, command, missing, main_table, goal_lines):
    """`summary.md`, the short version (a README): the main table and the goals."""
    short = ([f"Made by `{command}`; mean ± spread over seeds; robust accuracy is "
              "the per-image worst case over the attack suite."] if not missing else
             [f"**Incomplete**: not evaluated yet: {', '.join(missing)}."])
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(["# Summary", ""] + short + [""] + main_table + goal_lines) + "\n")


def write(out, summary, timings, targets, command):
    """Writes `results.md` and the plots; returns the Markdown's path."""
    noise, robust = _columns(summary)
    groups, models = summary["groups"], summary["models"]
    missing = [n for n, m in models.items() if "clean" not in m]
    radii = _certified_radii(summary)
    group_rows = [(base, ", ".join(str(s) for s in groups[base]["seeds"]), groups[base])
                  for base in groups]
    main_table = _table(group_rows, noise, robust, radii)
    goal_lines = _goal_lines(summary, targets)
    lines = _intro_lines(summary, command, missing)
    lines += ["## Standard vs HaH", ""] + main_table
    lines += ["", "### Each seed", ""]
    lines += _table([(m["name"], str(m["seed"]), m) for m in models.values()
                     if m["name"] not in summary["ablations"] and "clean" in m],
                    noise, robust, radii)
    lines += goal_lines
    lines += _paired_lines(summary)
    lines += _ablation_lines(summary, group_rows, noise, robust, radii)
    lines += _paper_protocol_lines(summary, group_rows, robust)
    lines += _certified_lines(summary)
    lines += certified.fixed_sigma_lines(summary)
    lines += _masking_lines(summary, robust)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plot(out, summary)]
    lines += _wall_time_lines(timings)
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    _write_summary(out, command, missing, main_table, goal_lines)
    return path


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


SUMMARY_BEGIN, SUMMARY_END = "<!-- results-summary:begin -->", "<!-- results-summary:end -->"


def section_markers(section):
    """The begin and end lines of a named results section of a document."""
    return f"<!-- results-{section}:begin -->", f"<!-- results-{section}:end -->"


def embed(doc_path, results_path, section=None):
    """Replaces the part of `doc_path` between the results markers with
    the Markdown of `results_path` (headings one level down, links made
    relative to the document), or between the summary markers with the
    main table and the goals (`summary.md`). With `section`, only between
    that section's markers (`section_markers`). Returns False when the
    document has none of them."""
    with open(doc_path) as f:
        document = f.read()
    done = False
    pairs = ((BEGIN, END, os.path.basename(results_path)),
             (SUMMARY_BEGIN, SUMMARY_END, "summary.md"))
    if section:
        pairs = (section_markers(section) + (os.path.basename(results_path),),)
    for begin, end, name in pairs:
        if begin in document and end in document:
            document = replace_between(document, begin, end, doc_path,
                                os.path.join(os.path.dirname(results_path), name))
            done = True
    if done:
        with open(doc_path, "w") as f:
            f.write(document)
    return done


def replace_between(document, begin, end, doc_path, results_path):
    """`document` with the part between the `begin` and `end` lines
    replaced by the Markdown file `results_path` without its title
    (headings one level down, links made relative to `doc_path`)."""
    with open(results_path) as f:
        generated = f.read()
    prefix = os.path.relpath(os.path.dirname(os.path.abspath(results_path)),
                             os.path.dirname(os.path.abspath(doc_path)))
    lines = []
    for line in generated.splitlines()[1:]:  # its title is the document's
        if line.startswith("#"):
            line = "#" + line
        line = line.replace("the files in this folder", f"the files in `{prefix}/`")
        if line.startswith("![") and "](" in line:
            label, target = line[2:-1].split("](", 1)
            line = f"![{label}]({prefix}/{target})"
        lines.append(line)
    head, rest = document.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return head + begin + "\n" + "\n".join(lines).strip("\n") + "\n" + end + tail
