"""The Markdown of `python -m experiments results`: `OUT/results.md` (every
table) and `OUT/summary.md` (the main table and the goals), from the
numbers of `results_summary.collect`; percentages in the tables.
"""

import os

from experiments import (certified, full_autoattack, kept_models, results_confirmed,
                         results_plots, results_summary)


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


def _table(rows, noise, robust, radii, legend):
    """A table of numbers per row `(label, seeds, item)`: a network's group
    (mean ± sd) or a model; robust accuracies marked (`results_confirmed`),
    their footnotes after the table."""
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
        models = results_confirmed.row_models(legend.summary, label, item)
        one_seed = "name" not in item and (get("clean") or {}).get("n") == 1
        cells = [legend.mark(label, results_confirmed.ONE_SEED if one_seed else ""), seeds,
                 _pct(get("test_accuracy")), _pct(get("clean"))]
        cells += [_pct(get("noise", s)) for s in noise]
        cells += [legend.mark(_pct(get("robust", n, e)), results_confirmed.marks_of(models, n, e))
                  for n, e in robust]
        cells += [_pct(get("certified", r)) for r in radii]
        cells += [_pct(get("nonzero_first_layers"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + legend.lines()


def _points(stat):
    """A difference of fractions in signed points (mean ± spread), or n/a."""
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{100 * stat['mean']:+.1f} ± {100 * stat['std']:.1f}"
    return f"{100 * stat['mean']:+.1f}"


def _paper_tables(rows, robust, legend):
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
                    over = results_summary.overstates(item, norm, eps) if worst is not None else None
                    over = None if over is None else {"mean": over, "std": 0.0, "n": 1}
                paper_text = "n/a" if paper is None else _pct(paper)
                marks = results_confirmed.marks_of(
                    results_confirmed.row_models(legend.summary, label, item), norm, eps)
                cells.append(f"{legend.mark(_pct(worst), marks)} / {paper_text} "
                             f"({_points(over)})")
            lines.append("| " + " | ".join(cells) + " |")
        lines += legend.lines()
    return lines


def _difference_rows(pairs, keys, label, legend, networks):
    """Table rows of seed-by-seed differences; bold when clear (> 2 sd);
    robust differences marked (`results_confirmed`) from both networks'
    models (`networks(name)` gives the pair of a row), one seed marked."""
    lines = []
    budgets = results_confirmed.measure_budgets(legend.robust)
    for name, entry in pairs.items():
        models = results_confirmed.pair_models(legend.summary, *networks(name), entry["seeds"])
        cells = []
        for key in keys:
            stat = entry["measures"].get(key)
            text = _points(stat)
            clear = stat is not None and stat["n"] > 1 and abs(stat["mean"]) > 2 * stat["std"]
            text = f"**{text}**" if clear else text
            if key in budgets:
                text = legend.mark(text, results_confirmed.marks_of(models, *budgets[key],
                                                                   confirm=False))
            cells.append(text)
        one_seed = results_confirmed.ONE_SEED if len(entry["seeds"]) == 1 else ""
        lines.append(f"| {legend.mark(label(name), one_seed)} | "
                     f"{', '.join(map(str, entry['seeds']))} | " + " | ".join(cells) + " |")
    return lines + legend.lines()


def _paired_lines(summary, legend):
    """What HaH adds: HaH minus each other seeded network, seed by seed;
    what the cost adds to each variant with an alpha = 0 twin; and the
    chosen comparisons (`results_summary.comparisons`)."""
    pairs = summary.get("paired") or {}
    twins = summary.get("cost_twins") or {}
    chosen = summary.get("comparisons") or {}
    if not (pairs or twins or chosen):
        return []
    keys = list(next(iter({**pairs, **twins, **chosen}.values()))["measures"])
    lines = ["", "## What HaH adds, seed by seed", "",
             "HaH minus the other network of the same seed, on the same images, noise "
             "draws and attacks, in points: mean ± sample standard deviation over the "
             "seeds. A difference is **bold** when it is larger than twice its spread "
             "(with 2 or more seeds).", ""]
    if pairs:
        lines += ["| HaH minus | seeds | " + " | ".join(keys) + " |",
                  "|" + "---|" * (len(keys) + 2)]
        lines += _difference_rows(pairs, keys, lambda name: name, legend,
                                  lambda name: ("hah", name))
    if twins:
        lines += ["", "What the HaH cost adds to the other variants: each one minus its "
                  "twin with the cost's weights at 0 (same seeds and batches), in the "
                  "same units.", "",
                  "| variant minus its alpha = 0 twin | seeds | " + " | ".join(keys) + " |",
                  "|" + "---|" * (len(keys) + 2)]
        lines += _difference_rows(twins, keys, lambda name: f"{name} - {name}_alpha0",
                                  legend, lambda name: (name, f"{name}_alpha0"))
    return lines + _comparison_lines(summary, chosen, keys, legend)


def _comparison_lines(summary, chosen, keys, legend):
    """The chosen comparisons' table, after the networks they name."""
    if not chosen:
        return []
    models = list(summary["models"].values())
    names = dict.fromkeys(name for entry in chosen.values() for name in entry["pair"])
    lines = ["", "Chosen comparisons, each the first network minus the second on the "
             "seeds both ran (a one-seed network on its seed), in the same units. The "
             "networks:", ""]
    for name in names:
        run = next(iter(results_summary.runs_of(models, name).values()), None)
        if run is not None:
            lines.append(f"- `{name}`: {run['description']}")
    return lines + ["", "| difference | seeds | " + " | ".join(keys) + " |",
                    "|" + "---|" * (len(keys) + 2)] + _difference_rows(
                        chosen, keys, lambda name: name, legend,
                        lambda name: chosen[name]["pair"])


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


def _intro_lines(out, summary, command, missing):
    """The title, where the numbers come from, and what was measured how."""
    models = summary["models"]
    lines = ["# Results: standard vs HaH network on Fashion-MNIST", "",
             f"Made by `{command}`; every number comes from the files in this folder "
             "(`runs/NAME/metrics.json`, `eval/NAME/report.json`).", ""]
    if missing:
        lines += [f"**Incomplete**: not evaluated yet: {', '.join(missing)}.", ""]
    lines += kept_models.retrain_lines(out, command, models)
    reference = next((m for m in models.values() if "clean" in m), None)
    if reference is not None:
        lines += [f"Test accuracy on the whole test set (from training); everything else "
                  f"on the first {reference['images']} test images, the same for every "
                  f"model. Robust accuracy: per-image worst case over the suite "
                  f"(attacks {', '.join(reference['suite']['attacks'] or [])}; "
                  f"caps: {_suite_caps(reference['suite'])}). Mean ± sample standard "
                  "deviation over seeds.", ""]
        ran = {a for m in models.values() for a in m.get("attacks_ran", [])}
        idle = [a for a in reference["suite"]["attacks"] or [] if a not in ran]
        if idle and all("attacks_ran" in m for m in models.values() if "clean" in m):
            lines += [f"In the suite but run on no model (nothing for them to attack): "
                      f"{', '.join(idle)}.", ""]
    if _certified_radii(summary):
        certify = next(m["certify"] for m in models.values() if m.get("certified"))
        lines += [f"Certified L2 accuracy: randomized smoothing (CERTIFY, Clopper-Pearson, "
                  f"n0 = {certify['n0']}, n = {certify['n']}, failure probability "
                  f"{certify['alpha']:g} per image) on the first {certify['images']} "
                  f"images, the best of σ = {', '.join(f'{x:g}' for x in certify['sigmas'])} "
                  "at each radius; it holds against every attack.", ""]
    return lines


#: Seeded networks that get a goal table of their own beside HaH's:
#: the robust recipe (the HaH cost without the threshold).
GOAL_CANDIDATES = {"hah_no_threshold": "the robust recipe, hah_no_threshold"}


def _goal_lines(summary, targets, legend, candidate="hah"):
    """The goals table (`candidate`, HaH by default, against standard), or
    nothing without goals."""
    rows = results_summary.goals(summary, targets, candidate)
    if not rows:
        return []
    title, column = (("HaH", "HaH") if candidate == "hah" else
                     (GOAL_CANDIDATES.get(candidate, candidate), candidate))
    lines = ["", f"## Goals ({title} against standard)", "",
             f"| goal | where | standard | {column} | difference | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v: "-" if v is None else f"{v:.1f}")
        difference = "-" if r["difference"] is None else (
            f"{r['difference']:.2f}" if r["goal"] == "non-zero activations"
            else f"{r['difference']:+.1f}")
        met = {True: "yes", False: "**no**", None: "undecided"}[r["met"]]
        difference = legend.mark(difference, r.get("marks", ""))
        lines.append(f"| {r['goal']} | {r['where']} | {fmt(r['standard'])} | "
                     f"{fmt(r['hah'])} | {difference} | {r['target']} | {met} |")
    return lines + legend.lines()


def _ablation_lines(summary, group_rows, noise, robust, radii, legend):
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
        noise, robust, radii, legend)


def _paper_protocol_lines(summary, group_rows, robust, legend):
    """Worst case against the paper's protocol: per group, then per model."""
    lines = ["", "## The paper's protocol against the worst case", "",
             "Each cell: worst case / the paper's protocol (APGD-CE + APGD-T, 1 "
             "restart, at the suite's caps above; its own per-image cascade) and, in "
             "brackets, how much the paper's protocol overstates robustness (paper "
             "minus worst case, in points). n/a: the report predates the "
             "paper-protocol column (or the suite ran without APGD).", ""]
    lines += ["Mean ± sample standard deviation over seeds (the overstatement's spread "
              "is that of the per-seed differences):"]
    lines += _paper_tables(group_rows, robust, legend)
    lines += ["", "Each model:"]
    return lines + _paper_tables([(m["name"], str(m["seed"]), m)
                                  for m in summary["models"].values() if "clean" in m], robust,
                                 legend)


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
    legend = results_confirmed.Legend(summary, robust)
    main_table = _table(group_rows, noise, robust, radii, legend)
    goal_lines = _goal_lines(summary, targets, legend)
    for candidate in GOAL_CANDIDATES:
        if candidate in summary["groups"]:
            goal_lines += _goal_lines(summary, targets, legend, candidate)
    lines = _intro_lines(out, summary, command, missing)
    lines += ["## Standard vs HaH", ""] + main_table
    lines += ["", "### Each seed", ""]
    lines += _table([(m["name"], str(m["seed"]), m) for m in models.values()
                     if m["name"] not in summary["ablations"] and "clean" in m],
                    noise, robust, radii, legend)
    lines += goal_lines
    lines += _paired_lines(summary, legend)
    lines += _ablation_lines(summary, group_rows, noise, robust, radii, legend)
    lines += _paper_protocol_lines(summary, group_rows, robust, legend)
    lines += _certified_lines(summary)
    lines += certified.fixed_sigma_lines(summary)
    lines += full_autoattack.lines(summary.get("autoattack_standard"))
    lines += _masking_lines(summary, robust)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in results_plots.plot(out, summary)]
    lines += _wall_time_lines(timings)
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    _write_summary(out, command, missing, main_table, goal_lines)
    return path


