"""The numbers and Markdown of the results front page (`experiments.front`):
the studies, each evaluated network of a study, the key networks' table
and the key seed-by-seed differences, from the studies' `results.json`.

A network is a seeded group or a one-seed run of one study; its numbers
are computed here from its models' entries (fractions in the files,
percent in the tables; spreads are sample standard deviations over seeds).
"""

from typing import NamedTuple

import numpy as np

from experiments import defenses
from experiments.results_confirmed import CONFIRMED, LOWER, MASKED, ONE_SEED, TOLERANCE
from experiments.results_summary import runs_of


class Study(NamedTuple):
    key: str
    #: Its folder under `results/`, its report there, its page under docs/results/.
    folder: str
    report: str
    page: str
    title: str
    #: The make target that runs it, or None.
    make: str
    #: Whether it measured robust accuracy (its networks are on the figure).
    figure: bool


STUDIES = (
    Study("sweep", "fashion_mnist_sweep", "sweep.md", "sweep.md",
          "Where does the HaH cost act? Small network, cost weights x0-x300, 2 seeds "
          "(noise and sparsity only; the first step of make sweep)", "make sweep", False),
    Study("medium_sweep", "fashion_mnist_medium_sweep", "sweep.md", "medium_sweep.md",
          "The medium network (HaH-VGG16's shape, 15 epochs) at x0, x1, x30, one seed "
          "(noise and sparsity only; the second step of make sweep)", "make sweep", False),
    Study("regime", "fashion_mnist_regime", "results.md", "regime.md",
          "Small network at x30: standard, HaH, the recipe and both alpha = 0 twins, 3 seeds, "
          "5 one-seed ablations, 500 eval images", "make results", True),
    Study("paper_alphas", "fashion_mnist", "results.md", "paper_alphas.md",
          "Small network at the paper's alphas (x1), 3 seeds, 1,000 eval images, the suite "
          "of its day (no AutoAttack components)", None, True),
    Study("medium", "fashion_mnist_medium", "results.md", "medium_recipe.md",
          "Medium network at x30: standard, the recipe and its twin (3 seeds), HaH (1 seed), "
          "1,000 eval images, AutoAttack on 100", "make results-medium", True),
    Study("defenses", "fashion_mnist_defenses", "results.md", "defenses.md",
          "Small network at x30 with adversarial (FGSM-RS, PGD-7) and noise training, and "
          "the continuous threshold, 500 eval images, AutoAttack on 100",
          "make results-defenses", True),
    Study("front", "fashion_mnist_front", "results.md", "front.md",
          "Adversarial training without the batch-norm collapse: clean vs adversarial "
          "batch-norm statistics, the HaH cost on top of it (3 seeds), the PGD-7 pair, the "
          "front at L∞ eps 0.02 and 0.05 (1 seed), L1 sparsity (trained only), small "
          "network at x30, 500 eval images, AutoAttack on 100",
          "make results-front", True),
)
LABELS = {s.key: {"regime": "small", "paper_alphas": "small, x1", "medium": "medium",
                  "defenses": "small", "front": "small"}.get(s.key, s.key) for s in STUDIES}
#: The figure's and the key table's robust accuracies.
BUDGETS = (("linf", 0.05), ("l2", 0.5))
KEY = (("regime", "standard"), ("regime", "hah"), ("regime", "hah_no_threshold"),
       ("regime", "hah_no_threshold_alpha0"), ("medium", "standard"), ("medium", "hah"),
       ("medium", "hah_no_threshold"), ("medium", "hah_no_threshold_alpha0"),
       ("defenses", "standard_at"), ("defenses", "recipe_at"), ("defenses", "recipe_at_alpha0"),
       ("defenses", "hah_at"), ("defenses", "standard_pgd_at"), ("defenses", "recipe_pgd_at"),
       ("defenses", "hah_pgd_at"), ("defenses", "standard_noise_mix"),
       ("defenses", "recipe_noise_mix"), ("defenses", "hah_soft"),
       ("front", "standard_at_bnclean"), ("front", "recipe_at_bnclean"),
       ("front", "recipe_at_alpha0_bnclean"), ("front", "recipe_pgd_at_bnclean"),
       ("front", "recipe_pgd_at_alpha0_bnclean"), ("front", "standard_at_eps002"),
       ("front", "recipe_at_eps002"), ("front", "standard_at_eps005"),
       ("front", "recipe_at_eps005"))
#: The figure's curves: each family of networks, from the undefended
#: network of the same design up its defense's strength (the small network
#: at x30 and 500 eval images in studies 3, 6 and 7, so one curve may join
#: points of several studies). A curve is drawn through the points that
#: are evaluated, in this order.
FAMILIES = {
    "standard, adversarially trained (L∞ eps 0, 0.02, 0.05, 0.1)": (
        ("regime", "standard"), ("front", "standard_at_eps002"),
        ("front", "standard_at_eps005"), ("front", "standard_at_bnclean")),
    "standard, noise training (σ 0, 0.12, 0.25, 0.5)": (
        ("regime", "standard"), ("front", "standard_noise_mix_s012"),
        ("defenses", "standard_noise_mix"), ("front", "standard_noise_mix_s05")),
    "recipe, cost weight (x0, x10, x30, x100)": (
        ("regime", "hah_no_threshold_alpha0"), ("front", "recipe_x10"),
        ("regime", "hah_no_threshold"), ("front", "recipe_x100")),
    "recipe, adversarially trained (L∞ eps 0, 0.02, 0.05, 0.1)": (
        ("regime", "hah_no_threshold"), ("front", "recipe_at_eps002"),
        ("front", "recipe_at_eps005"), ("front", "recipe_at_bnclean")),
    "recipe, noise training (σ 0, 0.25)": (
        ("regime", "hah_no_threshold"), ("defenses", "recipe_noise_mix")),
}
DIFFERENCES = (
    ("regime", "hah_no_threshold", "standard"), ("regime", "hah_no_threshold",
                                                 "hah_no_threshold_alpha0"),
    ("regime", "hah", "standard"), ("regime", "hah", "hah_alpha0"),
    ("medium", "hah_no_threshold", "standard"), ("medium", "hah_no_threshold",
                                                 "hah_no_threshold_alpha0"),
    ("medium", "hah", "standard"),
    ("defenses", "standard_at", "standard"), ("defenses", "recipe_at", "standard_at"),
    ("defenses", "recipe_at", "recipe_at_alpha0"), ("defenses", "hah_at", "standard_at"),
    ("defenses", "recipe_pgd_at", "standard_pgd_at"), ("defenses", "hah_pgd_at",
                                                       "standard_pgd_at"),
    ("defenses", "standard_noise_mix", "standard"),
    ("defenses", "recipe_noise_mix", "standard_noise_mix"),
    ("defenses", "hah_soft", "hah_no_threshold"),
    ("front", "recipe_at_bnclean", "standard_at_bnclean"),
    ("front", "recipe_at_bnclean", "recipe_at_alpha0_bnclean"),
    ("front", "recipe_pgd_at_bnclean", "recipe_pgd_at_alpha0_bnclean"),
    ("front", "recipe_at_eps002", "standard_at_eps002"),
    ("front", "recipe_at_eps005", "standard_at_eps005"))


def _key(value):
    """A number as results.json spells it as a key (`0.05` -> `"0.05"`)."""
    return str(float(value))


def runs(summary, name):
    """`{seed: model}` of an evaluated network of a study."""
    models = [m for m in summary["models"].values() if "clean" in m]
    return runs_of(models, name)


def networks(study, summary):
    """The names of a study's evaluated networks (groups, then one-seed
    runs); the defenses study's own only (its references are the regime's),
    and of the front study those trained without batch norm's adversarial
    statistics (the others are study 6's networks, evaluated again there
    for the before/after table on the same weights)."""
    names = [*summary["groups"], *summary["ablations"]]
    if study == "defenses":
        names = [n for n in names if n in defenses.DEFENSES]
    if study == "front":
        names = [n for n in names if n in defenses.DEFENSES
                 and not set(defenses.ADVERSARIAL_BN) & set(defenses.DEFENSES[n][1])]
    return [n for n in names if runs(summary, n)]


def measure(model, what):
    """One number of a model (a fraction), None when absent: `"test"`,
    `"clean"`, `("noise", sigma)`, `("certified", radius)` or `(norm, eps)`."""
    if what in ("test", "clean"):
        return model.get("test_accuracy" if what == "test" else "clean")
    kind, value = what
    if kind in ("noise", "certified"):
        return (model.get(kind) or {}).get(_key(value))
    return model["robust"].get(kind, {}).get(_key(value))


def stat(values):
    """`(mean, sd, n)` in percent of the values that exist, or None."""
    values = [100 * v for v in values if v is not None]
    if not values:
        return None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), sd, len(values)


def masked(models):
    """Whether a masking check failed on any of `models` (suite or AutoAttack)."""
    return any(m.get("checks_failed") or m.get("autoattack_checks_failed") for m in models)


def autoattack(seeded, norm, eps):
    """`(seeds, images, suite, worst)` in percent over the models of
    `seeded` (`{seed: model}`) that ran AutoAttack at `eps`, or None."""
    cells = {s: m["autoattack"][norm].get(_key(eps)) for s, m in seeded.items()
             if m.get("autoattack")}
    cells = {s: c for s, c in cells.items() if c is not None}
    if not cells:
        return None
    images = next(m["autoattack"]["images"] for m in seeded.values() if m.get("autoattack"))
    return (sorted(cells), images, 100 * float(np.mean([c["suite"] for c in cells.values()])),
            100 * float(np.mean([c["both"] for c in cells.values()])))


def verdict(seeded, norm, eps):
    """`MASKED`, `LOWER`, `CONFIRMED` marks of a network's number, as text."""
    marks = MASKED if masked(list(seeded.values())) else ""
    checked = autoattack(seeded, norm, eps)
    if checked is not None:
        marks += LOWER if checked[2] - checked[3] > 100 * TOLERANCE + 1e-9 else CONFIRMED
    return marks


def _text(value, signed=False, bold_clear=False):
    if value is None:
        return "-"
    mean, sd, n = value
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    if n > 1:
        text += f" ± {sd:.1f}"
    return f"**{text}**" if bold_clear and n > 1 and abs(mean) > 2 * sd else text


#: The "run by" cell of a study without a make target.
RUN_BY_COMMAND = "the command beside, without --report-only"


def study_lines(commands, link):
    """One line per study: its report (under `link`), the make target that
    runs it and the command that rewrites its report from its files."""
    lines = ["| # | study | report | run by | report rewritten from the files by |",
             "|---|---|---|---|---|"]
    for number, study in enumerate(STUDIES, 1):
        lines.append(f"| {number} | {study.title} | [{study.page}]({link}/{study.page}) | "
                     f"{f'`{study.make}`' if study.make else RUN_BY_COMMAND} | "
                     f"`{commands[study.key]}` |")
    return lines


def _checked_cell(seeded, norm, eps):
    """`suite -> worst of both (seeds)` on the AutoAttack images, or `-`."""
    checked = autoattack(seeded, norm, eps)
    if checked is None:
        return "-"
    seeds, _, suite, worst = checked
    return f"{suite:.0f} → {worst:.0f} ({', '.join(map(str, seeds))})"


def key_lines(studies, figure):
    """The key networks' table, its notes, and the figure below it."""
    symbols = {"linf": "L∞", "l2": "L2"}
    header = ["network", "network size", "seeds", "test acc. (test set)",
              "clean (eval images)"]
    for norm, eps in BUDGETS:
        header += [f"{symbols[norm]} {eps:g}, suite", f"{symbols[norm]} {eps:g}, AutoAttack "
                   "images: suite → with AutoAttack (seeds)"]
    lines = ["| " + " | ".join(header + ["masking checks failed"]) + " |",
             "|" + "---|" * (len(header) + 1)]
    for key, name in KEY:
        if key not in studies or name not in networks(key, studies[key]):
            continue
        seeded = runs(studies[key], name)
        models = list(seeded.values())
        one_seed = f" {ONE_SEED}" if len(models) == 1 else ""
        cells = [f"`{name}`{one_seed}", LABELS[key], ", ".join(map(str, sorted(seeded))),
                 _text(stat([measure(m, "test") for m in models])),
                 _text(stat([measure(m, "clean") for m in models]))]
        for norm, eps in BUDGETS:
            marks = verdict(seeded, norm, eps)
            cells += [_text(stat([measure(m, (norm, eps)) for m in models]))
                      + (f" {marks}" if marks else ""), _checked_cell(seeded, norm, eps)]
        failed = sorted({c for m in models for c in [*m.get("checks_failed", []),
                                                     *m.get("autoattack_checks_failed", [])]})
        lines.append("| " + " | ".join(cells + [", ".join(failed) or "none"]) + " |")
    return lines + ["", *KEY_NOTES, "", f"![Clean against robust accuracy]({figure})"]


KEY_NOTES = (
    "Suite columns: mean ± sample sd over the seeds, on the study's eval images. AutoAttack "
    "columns: on the first 100 test images of the seeds named, the suite's robust accuracy "
    "→ the per-image worst of suite and AutoAttack at its standard strength (APGD-CE 100 "
    "steps x 5 restarts, APGD-T 100 x 9 targets, Square 5,000 queries), in whole images. "
    f"Marks, computed from the files (`experiments/results_confirmed.py`): {MASKED} a "
    "masking check failed (on a seed; in the suite's or AutoAttack's evaluation), so the "
    f"number is an upper bound; {LOWER} AutoAttack leaves more than {100 * TOLERANCE:g} "
    f"points less than the suite on its images; {CONFIRMED} it comes within "
    f"{100 * TOLERANCE:g} points; {ONE_SEED} one seed.",)
DIFFERENCE_MEASURES = (("test acc. (test set)", "test"), ("clean (eval images)", "clean"),
                       ("noise σ 0.3", ("noise", 0.3)), ("L∞ 0.05", ("linf", 0.05)),
                       ("L2 0.5", ("l2", 0.5)), ("certified L2 0.25 (best σ)",
                                                 ("certified", 0.25)))


DIFFERENCE_NOTES = (
    "The first network minus the second, seed by seed (same seed, images, noise draws and "
    "attacks), in points: mean ± sample sd over the seeds both ran; **bold** when clear "
    f"(larger than twice its sd, 2 or more seeds). {MASKED}: a masking check failed on a "
    "seed of either network, so the difference rests on an upper bound. Last column: on the "
    "first 100 test images of the seeds where either network ran AutoAttack at its "
    "standard strength, each network's per-image worst of suite and AutoAttack where it "
    "ran, the suite's number elsewhere.",)


def _on_autoattack_images(model, norm, eps):
    """A model's robust accuracy on the AutoAttack images: the per-image
    worst of suite and AutoAttack where it ran, the suite's elsewhere
    (`results_confirmed.worst_on_first_images`, budgets spelt as in results.json)."""
    cell = ((model.get("autoattack") or {}).get(norm) or {}).get(_key(eps))
    if cell is not None:
        return cell["both"]
    return ((model.get("suite_first_images") or {}).get(norm) or {}).get(_key(eps))


def confirmed_difference(mine, theirs, norm, eps):
    """`(stat, seeds)` of first minus second (`{seed: model}` each) on the
    AutoAttack images of the seeds where either ran AutoAttack, or None."""
    seeds = sorted(s for s in set(mine) & set(theirs)
                   if mine[s].get("autoattack") or theirs[s].get("autoattack"))
    values = [(_on_autoattack_images(mine[s], norm, eps),
               _on_autoattack_images(theirs[s], norm, eps)) for s in seeds]
    if not seeds or any(a is None or b is None for a, b in values):
        return None
    return stat([a - b for a, b in values]), seeds


def _difference_row(summary, first, second):
    """The cells of `first - second`, seed by seed, or None without a common seed."""
    mine, theirs = runs(summary, first), runs(summary, second)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    cells = []
    for _, what in DIFFERENCE_MEASURES:
        values = [None if measure(mine[s], what) is None or measure(theirs[s], what) is None
                  else measure(mine[s], what) - measure(theirs[s], what) for s in seeds]
        text = _text(stat(values), signed=True, bold_clear=True)
        if isinstance(what, tuple) and what[0] in ("linf", "l2") and masked(
                [mine[s] for s in seeds] + [theirs[s] for s in seeds]):
            text += f" {MASKED}"
        cells.append(text)
    confirmed = confirmed_difference(mine, theirs, "linf", 0.05)
    cells.append("-" if confirmed is None else
                 f"{_text(confirmed[0], signed=True)} ({', '.join(map(str, confirmed[1]))})")
    return [", ".join(map(str, seeds))] + cells


def difference_lines(studies):
    """The key seed-by-seed differences: a row per `DIFFERENCES` pair that ran."""
    header = ["difference", "network size", "seeds", *[m for m, _ in DIFFERENCE_MEASURES],
              "L∞ 0.05 on the AutoAttack images, with AutoAttack (seeds)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, first, second in DIFFERENCES:
        row = _difference_row(studies[key], first, second) if key in studies else None
        if row is None:
            continue
        one_seed = f" {ONE_SEED}" if row[0].count(",") == 0 else ""
        lines.append(f"| `{first} - {second}`{one_seed} | {LABELS[key]} | "
                     + " | ".join(row) + " |")
    return lines + ["", *DIFFERENCE_NOTES]
