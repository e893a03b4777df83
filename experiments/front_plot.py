"""The results front page's figure (`python -m experiments front`): clean
accuracy against worst-case robust accuracy, one panel per budget of
`front_tables.BUDGETS`, every evaluated network of every study a point.

A point is a network's mean over its seeds (suite, eval images), its
bars the sample standard deviation over seeds. Where AutoAttack at its
standard strength ran on a seed, a black ring says it confirms the
number (within `results_confirmed.TOLERANCE` on its images); an arrow
shows how far it lowers it otherwise (its mean reduction on its images).
A red ring: a masking check failed. Below, the same axes with only the
curves of `front_tables.FAMILIES`: each family from its undefended
network up its defense's strength, through the points evaluated so far.
"""

from experiments import front_tables
from keras_hebb import plots

COLORS = {"regime": "tab:blue", "paper_alphas": "tab:gray", "medium": "tab:green",
          "defenses": "tab:orange", "front": "tab:purple"}
TITLES = {"regime": "small network, x30 (study 3)",
          "paper_alphas": "small network, paper's alphas (study 4)",
          "medium": "medium network, x30 (study 5)",
          "defenses": "small network, x30, defended (study 6)",
          "front": "small network, x30, adv. trained, clean batch-norm statistics (study 7)"}


#: The networks named on the figure (the others are points only).
LABELLED = {*front_tables.KEY, ("regime", "standard_noise")} - {
    ("regime", "hah_no_threshold_alpha0"), ("medium", "hah_no_threshold_alpha0")}


def _marker(name):
    """Circle: standard; square: no threshold (the recipe); triangle: threshold."""
    if name.startswith("standard"):
        return "o"
    return "s" if name.startswith(("recipe", "hah_no_threshold")) else "^"


def _mean_point(seeded, budget):
    """`(robust, clean)` stats (`front_tables.stat`) of a network's seeds."""
    models = list(seeded.values())
    return (front_tables.stat([front_tables.measure(m, budget) for m in models]),
            front_tables.stat([front_tables.measure(m, "clean") for m in models]))


def _point(ax, study, name, seeded, budget):
    """Draws one network at `budget`; returns its AutoAttack verdict marks."""
    x, y = _mean_point(seeded, budget)
    if x is None or y is None:
        return ""
    color, hollow = COLORS[study], "alpha0" in name
    ax.errorbar(x[0], y[0], xerr=x[1], yerr=y[1], fmt=_marker(name), ms=5, color=color,
                mfc="white" if hollow else color, elinewidth=0.8, capsize=1.5, zorder=3)
    marks = front_tables.verdict(seeded, *budget)
    if front_tables.MASKED in marks:
        ax.plot(x[0], y[0], "o", ms=11, mfc="none", mec="red", mew=1.0, zorder=2)
    checked = front_tables.autoattack(seeded, *budget)
    if checked is not None and front_tables.LOWER not in marks:
        ax.plot(x[0], y[0], "o", ms=8, mfc="none", mec="black", mew=1.2, zorder=4)
    elif checked is not None:
        drop = checked[2] - checked[3]
        ax.annotate("", xy=(x[0] - drop, y[0]), xytext=(x[0], y[0]), zorder=4,
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.0})
    if (study, name) in LABELLED:
        ax.annotate(name, (x[0], y[0]), xytext=(3, 3), textcoords="offset points",
                    fontsize=5.5, color=color)
    return marks


#: The line of each of `front_tables.FAMILIES`' curves.
FAMILY_LINES = ({"color": "tab:blue", "ls": "-", "marker": "o"},
                {"color": "tab:cyan", "ls": ":", "marker": "o"},
                {"color": "tab:gray", "ls": "--", "marker": "s"},
                {"color": "tab:red", "ls": "-", "marker": "s"},
                {"color": "tab:pink", "ls": ":", "marker": "s"})


def _curves(ax, studies, budget):
    """Each family's curve through its evaluated points: means over seeds,
    bars the sample sd, a black ring where AutoAttack confirms the point."""
    for (label, members), line in zip(front_tables.FAMILIES.items(), FAMILY_LINES):
        points = []
        for study, name in members:
            seeded = front_tables.runs(studies[study], name) if study in studies else {}
            x, y = _mean_point(seeded, budget)
            if x is not None and y is not None:
                points.append((x, y, front_tables.verdict(seeded, *budget)))
        if not points:
            continue
        ax.errorbar([x[0] for x, _, _ in points], [y[0] for _, y, _ in points],
                    xerr=[x[1] for x, _, _ in points], yerr=[y[1] for _, y, _ in points],
                    lw=1.0, ms=4, elinewidth=0.7, capsize=1.5, label=label, **line)
        for x, y, marks in points:
            if front_tables.MASKED in marks:
                ax.plot(x[0], y[0], "o", ms=10, mfc="none", mec="red", mew=1.0)
            elif front_tables.CONFIRMED in marks:
                ax.plot(x[0], y[0], "o", ms=8, mfc="none", mec="black", mew=1.2)


def _legend(ax):
    """The key to colors, shapes, rings and arrows."""
    for study, title in TITLES.items():
        ax.plot([], [], "s", color=COLORS[study], label=title)
    for shape, label in (("o", "standard"), ("^", "hard threshold (HaH)"),
                         ("s", "no threshold (recipe)")):
        ax.plot([], [], shape, color="black", mfc="white", label=label)
    ax.plot([], [], "o", mfc="none", mec="black", mew=1.2, ms=8,
            label="AutoAttack (standard) confirms, within 2 points")
    ax.plot([], [], "o", mfc="none", mec="red", ms=11, label="a masking check failed")
    ax.plot([], [], color="black", marker=">", label="AutoAttack lowers it (arrow: by how much)")
    ax.legend(fontsize=5.5, loc="lower right")


def plot(studies, path):
    """Writes the figure of `studies` (`{study key: results.json}`) to `path`."""
    fig, grid = plots.figure(2, len(front_tables.BUDGETS), size=(11, 10.4))
    axes, curves = grid
    for ax, budget in zip(curves, front_tables.BUDGETS):
        _curves(ax, studies, budget)
        symbol = "L∞" if budget[0] == "linf" else "L2"
        ax.set_xlabel(f"robust accuracy at {symbol} {budget[1]:g}, worst case over the "
                      "suite (%, eval images)")
        ax.set_ylabel("clean accuracy (%, the same eval images)")
        ax.set_title(f"{symbol} {budget[1]:g}: the front, one curve per family\n(small "
                     "network, studies 3, 6, 7; ring: AutoAttack confirms)", fontsize=8)
        ax.grid(alpha=0.3)
    curves[0].legend(fontsize=6, loc="lower left")
    for ax, budget in zip(axes, front_tables.BUDGETS):
        for study, summary in studies.items():
            for name in front_tables.networks(study, summary):
                _point(ax, study, name, front_tables.runs(summary, name), budget)
        symbol = "L∞" if budget[0] == "linf" else "L2"
        ax.set_xlabel(f"robust accuracy at {symbol} {budget[1]:g}, worst case over the "
                      "suite (%, eval images)")
        ax.set_ylabel("clean accuracy (%, the same eval images)")
        ax.set_title(f"{symbol} {budget[1]:g}: mean ± sd over seeds (hollow: alpha = 0 twin)",
                     fontsize=8)
        ax.grid(alpha=0.3)
    _legend(axes[0])
    plots.save(fig, path, dpi=130)
    return path
