"""AutoAttack at its standard strength beside the suite, for the results report.

`python -m experiments results --autoattack-images N` evaluates every model
a second time, on its first N test images, with only AutoAttack's
components at their standard strength (`python -m training evaluate
--attacks apgd_ce,apgd_t,square --autoattack standard`: APGD-CE 100 steps x
5 restarts, APGD-T 100 steps x 9 targets, Square 5,000 queries) into
`OUT/eval_autoattack/NAME/`. Both evaluations record, per image, the
smallest budget that broke it, on the same first images; this module
reads them and gives, per budget, AutoAttack's robust accuracy, the
suite's on the same images, and the per-image worst case of both (what
neither could break). The suite's number minus the last is what the
suite's caps missed.
"""

import os

import numpy as np

from experiments import steps

#: The folder of the second evaluation, beside `OUT/eval/`.
FOLDER = "eval_autoattack"
#: `python -m training evaluate` arguments of the second evaluation.
ARGUMENTS = ["--attacks", "apgd_ce,apgd_t,square", "--autoattack", "standard",
             "--noise-sigmas", "0.1"]
MEASURES = ("autoattack", "suite", "both")
LABELS = {"autoattack": "AutoAttack (standard)", "suite": "suite, same images",
          "both": "worst of both"}


def _entry(path):
    report = steps.load_json(path) or {}
    models = report.get("models") or {}
    return next(iter(models.values()), None) if len(models) == 1 else None


def _breaking(values):
    """Smallest breaking budgets as floats: `inf` for never broken."""
    return np.array([np.inf if v is None else v for v in values], np.float64)


def _accuracy(smallest, budget):
    return float(np.mean(smallest > budget))


def model_numbers(out, name):
    """`{"images": N, norm: {budget: {measure: accuracy}}}` of one run, or
    None when either evaluation is missing."""
    suite = _entry(os.path.join(out, "eval", name, "report.json"))
    strong = _entry(os.path.join(out, FOLDER, name, "report.json"))
    if suite is None or strong is None:
        return None
    numbers = {}
    for norm, values in strong["smallest_breaking_budget"].items():
        aa = _breaking(values)
        first = _breaking(suite["smallest_breaking_budget"][norm][:len(aa)])
        both = np.minimum(aa, first)
        budgets = [float(r["budget"]) for r in strong["attacks"][norm]]
        numbers[norm] = {b: {"autoattack": _accuracy(aa, b), "suite": _accuracy(first, b),
                             "both": _accuracy(both, b)} for b in budgets}
    numbers["images"] = len(next(iter(strong["smallest_breaking_budget"].values())))
    return numbers


def collect(out, runs, family):
    """`{family: {norm: {budget: {measure: [accuracy per seed]}}}}` over the
    runs that have both evaluations, grouped by `family(run)` (a run's
    network; None leaves the run out); `{}` when none has."""
    result = {}
    for run in runs:
        name = family(run)
        numbers = model_numbers(out, run.name) if name else None
        if numbers is None:
            continue
        group = result.setdefault(name, {"images": numbers["images"], "seeds": []})
        group["seeds"].append(run.seed)
        for norm, budgets in numbers.items():
            if norm == "images":
                continue
            for budget, measures in budgets.items():
                cell = group.setdefault(norm, {}).setdefault(budget, {})
                for measure, value in measures.items():
                    cell.setdefault(measure, []).append(value)
    return result


def _cell(values):
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def lines(groups):
    """The report's section, or `[]` without the second evaluation."""
    if not groups:
        return []
    images = sorted({g["images"] for g in groups.values()})
    out = ["", "## AutoAttack at its standard strength", "",
           f"APGD-CE 100 steps x 5 restarts, APGD-T 100 steps x 9 targets, Square 5,000 "
           f"queries, on the first {', '.join(map(str, images))} test images of each model "
           "(`--autoattack standard`, a second evaluation per model); beside it the suite's "
           "worst case on the same images, and the per-image worst case of both. Robust "
           "accuracy in %, mean ± sample standard deviation over seeds."]
    for norm in ("linf", "l2"):
        budgets = sorted({b for g in groups.values() for b in g.get(norm, {})})
        if not budgets:
            continue
        symbol = "L∞" if norm == "linf" else "L2"
        out += ["", "| network | seeds | measure | "
                + " | ".join(f"{symbol} {b:g}" for b in budgets) + " |",
                "|" + "---|" * (len(budgets) + 3)]
        for name, group in groups.items():
            seeds = ", ".join(map(str, group["seeds"]))
            for measure in MEASURES:
                out.append(f"| {name} | {seeds} | {LABELS[measure]} | " + " | ".join(
                    _cell(group[norm][b][measure]) if b in group.get(norm, {}) else "-"
                    for b in budgets) + " |")
    return out
