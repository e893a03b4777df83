"""Which robust accuracies of a results report are confirmed, and the
confirmed numbers themselves.

A suite's robust accuracy is an upper bound. Two things in the committed
files say when it is a loose one: a failed masking check (in the suite's
evaluation or in the second one with AutoAttack at its standard
strength), and AutoAttack at its standard strength leaving fewer images
standing than the suite on the same first images
(`experiments.full_autoattack`). The tables of `results_tables` mark such
numbers, and the goal tables take, where AutoAttack ran, the per-image
worst case of both (`worst_on_first_images`).

Marks (each table's footnote says which it uses):

- `†`: a masking check failed on the model (or on a seed of the network);
- `‡`: AutoAttack at standard strength leaves more than `TOLERANCE` less
  than the suite on the same images (on a seed that ran it);
- `✓`: AutoAttack at standard strength ran (on a seed) and comes within
  `TOLERANCE` of the suite there;
- `§`: one seed only: a single number, no spread.
"""

import os

import numpy as np

from experiments import full_autoattack
from experiments.steps import load_json

#: How far AutoAttack may fall below the suite (a fraction) and still
#: confirm it: 2 points, 2 images in 100.
TOLERANCE = 0.02
MASKED, LOWER, CONFIRMED, ONE_SEED = "†", "‡", "✓", "§"
ORDER = (MASKED, LOWER, CONFIRMED, ONE_SEED)


def _failed(report_path):
    """The failed checks of the one model of a report ([] without it)."""
    models = (load_json(report_path) or {}).get("models") or {}
    if len(models) != 1:
        return []
    checks = next(iter(models.values())).get("checks", {})
    return sorted(k for k, c in checks.items() if c.get("passed") is False)


def suite_on_first_images(out, name, images):
    """`{norm: {budget: accuracy}}` of a run's suite on its first `images`
    images (from each image's smallest breaking budget), or None."""
    report = load_json(os.path.join(out, "eval", name, "report.json")) or {}
    entries = list((report.get("models") or {}).values())
    if len(entries) != 1 or "smallest_breaking_budget" not in entries[0]:
        return None
    entry = entries[0]
    result = {}
    for norm, values in entry["smallest_breaking_budget"].items():
        smallest = np.array([np.inf if v is None else v for v in values[:images]])
        result[norm] = {float(r["budget"]): float(np.mean(smallest > float(r["budget"])))
                        for r in entry["attacks"][norm]}
    return result


def add_to_models(out, models):
    """Adds to each evaluated model of `models` (`{name: summary}`) its
    AutoAttack numbers (`autoattack`, `autoattack_checks_failed`) when that
    evaluation exists and, when any model of the study has one, its suite
    on the same first images (`suite_first_images`)."""
    for name, model in models.items():
        numbers = full_autoattack.model_numbers(out, name)
        if numbers is not None and "clean" in model:
            model["autoattack"] = numbers
            model["autoattack_checks_failed"] = _failed(
                os.path.join(out, full_autoattack.FOLDER, name, "report.json"))
    counts = sorted({m["autoattack"]["images"] for m in models.values() if "autoattack" in m})
    if not counts:
        return
    for name, model in models.items():
        if "clean" in model:
            first = suite_on_first_images(out, name, counts[0])
            if first is not None:
                model["suite_first_images"] = {"images": counts[0], **first}


def model_marks(model, norm, eps):
    """The set of marks of one model's robust accuracy at `(norm, eps)`."""
    marks = set()
    if model.get("checks_failed") or model.get("autoattack_checks_failed"):
        marks.add(MASKED)
    cell = (model.get("autoattack") or {}).get(norm, {}).get(eps)
    if cell is not None:
        marks.add(LOWER if cell["suite"] - cell["both"] > TOLERANCE + 1e-9 else CONFIRMED)
    return marks


def marks_of(models, norm, eps, confirm=True):
    """The marks of a number made from `models` (a network's seeds, or the
    two networks of a difference), as text; `confirm=False` leaves out
    `✓` (a difference is confirmed only where both sides are)."""
    marks = set().union(*[model_marks(m, norm, eps) for m in models]) if models else set()
    if LOWER in marks or not confirm:
        marks.discard(CONFIRMED)
    return "".join(m for m in ORDER if m in marks)


def worst_on_first_images(model, norm, eps):
    """A model's robust accuracy on the AutoAttack images: the per-image
    worst of suite and AutoAttack where AutoAttack ran at `eps`, else the
    suite's on the same images; None without either."""
    cell = (model.get("autoattack") or {}).get(norm, {}).get(eps)
    if cell is not None:
        return cell["both"]
    return (model.get("suite_first_images") or {}).get(norm, {}).get(eps)


class Legend:
    """Collects the marks a table uses and writes their footnotes."""

    def __init__(self, summary, robust=()):
        #: The report's numbers and its robust columns `(norm, budget)`.
        self.summary, self.robust = summary, list(robust)
        self.used = set()
        self.images = sorted({m["autoattack"]["images"] for m in summary["models"].values()
                              if m.get("autoattack")})

    def mark(self, text, marks):
        """`text` with its marks (none: unchanged), remembered for the footnotes."""
        self.used.update(marks)
        return f"{text} {marks}" if marks else text

    def lines(self):
        """The footnotes of the marks used so far (then forgets them)."""
        images = ", ".join(map(str, self.images)) or "N"
        notes = {
            MASKED: "† a masking check failed on this model (on a seed of this network): "
                    "its robust accuracies are upper bounds (the gradient masking check "
                    "table names the check).",
            LOWER: f"‡ AutoAttack at its standard strength, on the first {images} images "
                   f"of the seed(s) it ran on, leaves more than {100 * TOLERANCE:g} points "
                   "less than the suite on the same images: an upper bound (the AutoAttack "
                   "table has both).",
            CONFIRMED: f"✓ AutoAttack at its standard strength ran on the first {images} "
                       f"images of this model (of a seed of this network) and comes within "
                       f"{100 * TOLERANCE:g} points of the suite there.",
            ONE_SEED: "§ one seed: a single number, no spread; not a finding."}
        used, self.used = [m for m in ORDER if m in self.used], set()
        return [line for m in used for line in ("", notes[m])]


def evaluated_runs(summary, name):
    """`{seed: model}` of the evaluated seeds of network `name` (its
    `name_sSEED` runs, or its one run called `name`), as
    `results_summary.runs_of` finds them."""
    return {m["seed"]: m for m in summary["models"].values()
            if m["name"] in (name, f"{name}_s{m['seed']}") and "clean" in m}


def row_models(summary, label, item):
    """The models behind a table row: the model itself, or a network's seeds."""
    if "name" in item:
        return [item]
    return list(evaluated_runs(summary, label).values())


def pair_models(summary, first, second, seeds):
    """The models of both networks of a difference, on its seeds."""
    return [m for name in (first, second)
            for seed, m in evaluated_runs(summary, name).items() if seed in seeds]


def measure_budgets(robust):
    """`{measure label: (norm, budget)}` of the robust columns, as
    `results_summary` labels the measures of a difference."""
    return {f"{'L∞' if norm == 'linf' else 'L2'} {eps:g}": (norm, eps) for norm, eps in robust}
