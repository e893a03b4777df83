"""Certified accuracy at each fixed smoothing sigma, for the results report.

The main tables of `python -m experiments results` give, per model, the
best certified accuracy over the smoothing sigmas at each radius: a choice
made on the test images themselves, and one that can hide a difference
(two networks whose best sigmas differ look alike). This part keeps each
sigma apart: mean ± sd over seeds for every seeded network, and the
seed-by-seed differences that the report pairs elsewhere (HaH minus each
other network, each variant minus its alpha = 0 twin), all computed from
the models' `certified_per_sigma` (their `report.json` files).
"""

import numpy as np

from experiments.results_summary import runs_of

#: Radii of the fixed-sigma tables (the main tables' certified columns).
RADII = (0.25, 0.5)


def _by_seed(summary, family):
    """`{seed: certified_per_sigma}` of the seeds of `family` (or of the
    one-seed run of that name) that were certified."""
    return {seed: m["certified_per_sigma"]
            for seed, m in runs_of(list(summary["models"].values()), family).items()
            if m.get("certified_per_sigma")}


def _mean_sd(values, signed=False):
    """`"m ± sd"` in points (`"m"` for one value, `"-"` for none); `signed`:
    a paired difference, `"+m ± sd"`, bold when larger than twice its sd."""
    if not values:
        return "-"
    mean = 100 * float(np.mean(values))
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    if len(values) == 1:
        return text
    sd = 100 * float(np.std(values, ddof=1))
    text += f" ± {sd:.1f}"
    return f"**{text}**" if signed and abs(mean) > 2 * sd else text


def sigmas(summary):
    """The smoothing sigmas every certified model has, sorted."""
    per_model = [set(m["certified_per_sigma"]) for m in summary["models"].values()
                 if m.get("certified_per_sigma")]
    return sorted(set.intersection(*per_model)) if per_model else []


def group_rows(summary):
    """`(family, sigma, {radius: "m ± sd"})` for every seeded family and sigma."""
    rows = []
    for family in summary["groups"]:
        seeds = _by_seed(summary, family)
        for sigma in sigmas(summary):
            cells = {r: _mean_sd([c[sigma].get(r, 0.0) for c in seeds.values()])
                     for r in RADII}
            if seeds:
                rows.append((family, sigma, cells))
    return rows


def _pairs(summary):
    """The differences the report pairs: HaH minus each other seeded
    family, every other variant minus the standard network, each family
    `X` minus its `X_alpha0` twin (a one-seed run's too), and the chosen
    comparisons (`results_summary.comparisons`), each pair once."""
    groups = list(summary["groups"])
    pairs = [("hah", other) for other in groups if other != "hah" and "hah" in groups]
    pairs += [(name, "standard") for name in groups
              if name not in ("hah", "standard") and "standard" in groups]
    pairs += [(name, f"{name}_alpha0") for name in summary.get("cost_twins") or {}]
    pairs += [tuple(entry["pair"]) for entry in (summary.get("comparisons") or {}).values()]
    return list(dict.fromkeys(pairs))


def paired_rows(summary):
    """`(first - second, sigma, seeds, {radius: "+m ± sd"})`, seed by seed."""
    rows = []
    for first, second in _pairs(summary):
        mine, theirs = _by_seed(summary, first), _by_seed(summary, second)
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        for sigma in sigmas(summary):
            cells = {r: _mean_sd([mine[s][sigma].get(r, 0.0) - theirs[s][sigma].get(r, 0.0)
                                  for s in seeds], signed=True) for r in RADII}
            rows.append((f"{first} - {second}", sigma, seeds, cells))
    return rows


def fixed_sigma_lines(summary):
    """The report's section, or `[]` when no model was certified."""
    if not sigmas(summary):
        return []
    header = " | ".join(f"r={r:g}" for r in RADII)
    lines = ["", "### Certified accuracy at each fixed σ", "",
             "The certified columns of the tables above take, for each model, the best σ "
             "at each radius, chosen on these same test images. Here each σ is fixed: mean ± "
             "sample standard deviation over seeds, then the seed-by-seed differences "
             "(same images and noise draws), **bold** when larger than twice their spread.",
             "", f"| network | σ | {header} |", "|" + "---|" * (len(RADII) + 2)]
    lines += [f"| {family} | {sigma:g} | " + " | ".join(cells[r] for r in RADII) + " |"
              for family, sigma, cells in group_rows(summary)]
    paired = paired_rows(summary)
    if paired:
        lines += ["", f"| difference (points) | σ | seeds | {header} |",
                  "|" + "---|" * (len(RADII) + 3)]
        lines += [f"| {name} | {sigma:g} | {', '.join(map(str, seeds))} | "
                  + " | ".join(cells[r] for r in RADII) + " |"
                  for name, sigma, seeds, cells in paired]
    return lines
