"""The numbers of `python -m experiments results`: every run's, each
network's over its seeds, the seed-by-seed differences and the goals.

Reads only the files the steps wrote (`OUT/runs/NAME/metrics.json`,
`OUT/eval/NAME/report.json`); `collect` writes `OUT/results.json`.
Accuracies are fractions; a spread is the sample standard deviation over
seeds.
"""

import json
import os

import numpy as np

from experiments import defenses, full_autoattack, results_confirmed
from experiments.results_confirmed import evaluated_runs
from experiments.steps import load_json


def _model_summary(out, run):
    """One run's numbers from its files (only the run's own when it is not
    evaluated yet)."""
    name = run.name
    summary = {"name": name, "base": run.base, "seed": run.seed,
               "description": run.description}
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
    from keras_hebb.robustness.registry import suite_summary  # every cap, from the registry

    summary["suite"] = suite_summary(report["settings"])
    # The attacks that made at least one stage (an attack in the suite can
    # have nothing to attack, e.g. transfer_bpda without a surrogate source).
    records = [r for rs in entry["attacks"].values() for r in rs]
    if all("stages" in r for r in records):
        summary["attacks_ran"] = sorted({s["attack"] for r in records for s in r["stages"]})
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
    summary["checks_failed"] = sorted(k for k, c in entry["checks"].items()
                                      if c.get("passed") is False)
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
        norm: {e: _stats([overstates(m, norm, e) for m in done]) for e in budgets}
        for norm, budgets in done[0]["robust"].items()}
    if all(m.get("certified") for m in done):
        group["certified"] = {r: _stats([m["certified"].get(r) for m in done])
                              for r in done[0]["certified"]}
    return group


def family(run):
    """The network a run is a seed of (`hah` for `hah_s2022`, `hah_alpha0`
    for `hah_alpha0_s2022`), or None for a one-seed ablation."""
    suffix = f"_s{run.seed}"
    return run.name[: -len(suffix)] if run.name.endswith(suffix) else None


def _paper(model, norm, eps):
    return model.get("paper_protocol", {}).get(norm, {}).get(eps)


def overstates(model, norm, eps):
    """Paper protocol minus worst case (a fraction), or None without it."""
    paper, worst = _paper(model, norm, eps), model["robust"][norm].get(eps)
    return None if paper is None or worst is None else paper - worst


def collect(out, runs, pairs=()):
    """`results.json` content from the finished steps of `runs`
    (`experiments.results.Run`s, as `experiments.results.plan` makes them);
    `pairs` (`(first, second)` network names) add their seed-by-seed
    differences (`comparisons`) where both ran."""
    models = {run.name: _model_summary(out, run) for run in runs}
    results_confirmed.add_to_models(out, models)
    mains = [r for r in runs if family(r)]
    names = list(dict.fromkeys(["standard", "hah"] + [family(r) for r in mains]))
    groups = {name: _group([models[r.name] for r in mains if family(r) == name])
              for name in names}
    summary = {"models": models, "groups": groups,
               "ablations": [r.name for r in runs if r not in mains]}
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
                [models[r.name].get("nonzero_first_layers") for r in mains if family(r) == name])
    summary["paired"] = paired(summary)
    # Absent when empty, so older results.json files stay as they were.
    for key, value in (("cost_twins", cost_twins(summary)),
                       ("comparisons", comparisons(summary, pairs))):
        if value:
            summary[key] = value
    # Each one-seed run is a network of its own seed.
    strong = full_autoattack.collect(out, runs, lambda run: family(run) or run.name)
    if strong:
        summary["autoattack_standard"] = strong
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


def runs_of(models, name):
    """`{seed: model}` of network `name`: its seeds (`name_sSEED`), or the
    one seed of a one-seed run called `name`."""
    return {m["seed"]: m for m in models if m["name"] in (name, f"{name}_s{m['seed']}")}


def _seed_differences(models, first, second):
    """`first` minus `second` (network names), seed by seed: `{"seeds": [...],
    "measures": {measure: stats}}`, or None when no seed has both."""
    def by_seed(name):
        return {s: m for s, m in runs_of(models, name).items() if "clean" in m}
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


def _differences(summary, pairs, label):
    """`{label(first, second): differences}` of each `(first, second)` pair
    of network names with a seed in common (`_seed_differences`)."""
    models = list(summary["models"].values())
    result = {}
    for first, second in pairs:
        entry = _seed_differences(models, first, second)
        if entry:
            result[label(first, second)] = entry
    return result


def paired(summary):
    """HaH minus each other seeded network, seed by seed: `{other: {measure:
    stats}}` (fractions). Same seed, same images, same noise and attack
    draws, so the spread is that of the differences, not of the networks.
    The defended networks (`defenses.DEFENSES`) are left out: the
    undefended HaH network minus a defended one answers no question; their
    report pairs them in its chosen comparisons instead."""
    return _differences(summary, [("hah", name) for name in summary["groups"]
                                  if name != "hah" and name not in defenses.DEFENSES],
                        lambda first, second: second)


def cost_twins(summary):
    """What the HaH cost adds to a HaH variant: each network `X` other
    than `hah` (seeded, or a one-seed run) with an `X_alpha0` beside it
    (the same network, seeds and batches with the cost's weights at 0), as
    `X` minus `X_alpha0`, keyed `X`."""
    names = [*summary["groups"], *summary["ablations"]]
    return _differences(summary, [(name, f"{name}_alpha0") for name in names
                                  if name != "hah" and f"{name}_alpha0" in names],
                        lambda first, second: first)


def comparisons(summary, pairs):
    """`first - second` for each pair of network names (seeded, or one-seed
    runs: then on their seed) that both ran: `{"first - second":
    differences}` with `"pair": [first, second]`."""
    names = {*summary["groups"], *summary["ablations"]}
    chosen = [(first, second) for first, second in pairs if first in names and second in names]
    result = _differences(summary, chosen, lambda first, second: f"{first} - {second}")
    for first, second in chosen:
        if f"{first} - {second}" in result:
            result[f"{first} - {second}"]["pair"] = [first, second]
    return result


def _mean(stat):
    return None if stat is None else stat["mean"]


def goals(summary, targets, candidate="hah"):
    """Each goal of a seeded network (`candidate`, default the HaH network)
    against the standard one: rows of `(goal, where, standard, hah,
    difference, target, met)` (`hah` holds the candidate's number); numbers
    in percent (points), `met` None when it cannot be decided."""
    std, hah = summary["groups"]["standard"], summary["groups"].get(candidate, {})
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
            rows.append(_robust_goal_row(summary, candidate, (norm, eps), where.format(eps),
                                         targets["robust_gain_min"]))
    a, b = std.get("nonzero_first_layers"), hah.get("nonzero_first_layers")
    if a and b:
        ratio = b["mean"] / a["mean"]
        rows.append({"goal": "non-zero activations", "where":
                     f"layers {', '.join(summary['hah_layers'])} (ratio "
                     f"{'HaH' if candidate == 'hah' else candidate} / standard)",
                     "standard": 100 * a["mean"], "hah": 100 * b["mean"],
                     "difference": ratio, "target": f"ratio <= {targets['nonzero_ratio_max']:g}",
                     "met": ratio <= targets["nonzero_ratio_max"]})
    one_seed = (results_confirmed.ONE_SEED if len(evaluated_runs(summary, candidate)) == 1
                else "")
    for r in rows:
        r.setdefault("marks", one_seed)
    return rows


def _robust_goal_row(summary, candidate, budget, where, gain):
    """The goal row of robust accuracy at `budget` `(norm, eps)`: the group
    means of the suite, or where AutoAttack ran, the per-image worst of
    suite and AutoAttack on its images (`_confirmed_pair`)."""
    norm, eps = budget
    std, hah = summary["groups"]["standard"], summary["groups"][candidate]
    a = 100 * _mean(std["robust"][norm][eps])
    b = 100 * _mean(hah["robust"][norm][eps])
    marks = _goal_marks(summary, candidate, norm, eps)
    confirmed = _confirmed_pair(summary, candidate, norm, eps)
    if confirmed is not None:
        suite_difference = b - a
        a, b, seeds, images = confirmed
        where = (f"eps {eps:g}, first {images} images of seed {', '.join(map(str, seeds))}: "
                 f"per-image worst of suite and AutoAttack where it ran (the suite alone, "
                 f"all images and seeds: {suite_difference:+.1f})")
        marks = marks.replace(results_confirmed.LOWER, "") + (
            results_confirmed.ONE_SEED if len(seeds) == 1 else "")
    return {"goal": f"robust accuracy ({norm})", "where": where, "standard": a, "hah": b,
            "difference": b - a, "target": f">= +{gain:g}", "met": b - a >= gain,
            "marks": "".join(dict.fromkeys(marks))}


def _goal_marks(summary, candidate, norm, eps):
    """The marks of a suite-based goal row (`results_confirmed`): the
    candidate's and standard's models, `§` when the candidate has one seed."""
    models = [*evaluated_runs(summary, "standard").values(),
              *evaluated_runs(summary, candidate).values()]
    marks = results_confirmed.marks_of(models, norm, eps, confirm=False)
    return marks + (results_confirmed.ONE_SEED if len(evaluated_runs(summary, candidate)) == 1
                    else "")


def _confirmed_pair(summary, candidate, norm, eps):
    """`(standard, candidate, seeds, images)` in percent: each network's mean
    over the seeds where either ran AutoAttack of its robust accuracy on
    the AutoAttack images (`results_confirmed.worst_on_first_images`), or
    None where neither ran it."""
    mine, theirs = evaluated_runs(summary, "standard"), evaluated_runs(summary, candidate)
    seeds = sorted(s for s in set(mine) & set(theirs)
                   if "autoattack" in mine[s] or "autoattack" in theirs[s])
    a = [results_confirmed.worst_on_first_images(mine[s], norm, eps) for s in seeds]
    b = [results_confirmed.worst_on_first_images(theirs[s], norm, eps) for s in seeds]
    if not seeds or None in a + b:
        return None
    images = theirs[seeds[0]]["suite_first_images"]["images"]
    return 100 * float(np.mean(a)), 100 * float(np.mean(b)), seeds, images
