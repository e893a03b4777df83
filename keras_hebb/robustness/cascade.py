"""One norm's cascades of the attack suite (`suite`): the budgets in
increasing order, at each one every attack stage on the images still
standing in the columns it belongs to, its breaks counted in all of them.

Whether an image is broken is always decided by the true model's forward
pass on the projected, clipped adversarial example, never by the attack.
"""

import time
from typing import NamedTuple

import numpy as np

from keras_hebb.robustness import attacks, registry
from keras_hebb.robustness.registry import REGISTRY

#: Reported columns: name -> which attacks (registry entries) its cascade
#: uses. Each is a per-image worst case over its attacks, with its own
#: carry-over across budgets. `paper_protocol` (the paper's APGD-CE +
#: APGD-T) and `autoattack` (AutoAttack's components in the suite; FAB-T is
#: not implemented) hold the attacks that name them in `Attack.columns`.
COLUMNS = {
    "gradient_only": lambda a: a.kind == "gradient",
    "plain_gradients": lambda a: a.kind in ("gradient", "autoattack"),
    "white_box": lambda a: a.kind in ("gradient", "autoattack", "bpda"),
    "worst_case": lambda a: True,
    "paper_protocol": lambda a: "paper_protocol" in a.columns,
    "autoattack": lambda a: "autoattack" in a.columns,
}
#: The monotone chain: after kind `registry.KINDS[i]` the accuracy is
#: column `_CHAIN[i]` (`accuracy_after_<kind>` in the records).
_CHAIN = ("gradient_only", "plain_gradients", "white_box", "worst_case")



class _NormRun(NamedTuple):
    """What every stage of one norm's cascades shares."""

    target: object
    sources: list
    images: np.ndarray
    labels: np.ndarray
    norm: str
    config: object
    progress: object
    seed: int


def _column_attacks(config):
    """Column name -> the attack names (of `config`) in its cascade."""
    names = set(config.attacks)
    return {column: frozenset(n for n in names if member(REGISTRY[n]))
            for column, member in COLUMNS.items()}


def evaluate_norm(target, sources, images, labels, clean_correct, norm, budgets,
                  config, shared_caches, progress, seed=0, prior_smallest=None):
    """Runs every column's cascade for one norm. `shared_caches`: the run's
    caches of the attacks whose `cache_scope` is `"suite"` (by cache group).
    `prior_smallest`: each image's smallest breaking budget in an earlier
    cascade on the same images (NaN: never); an image it broke at or
    below a budget counts as broken there in every column (the
    escalation's cascade, `escalation`, continues the suite's this way).

    Returns:
        `(records, smallest)`: one record per budget (ascending) and each
        image's smallest breaking budget in the worst case (NaN: never).
    """
    run = _NormRun(target, sources, images, labels, norm, config, progress, seed)
    members = _column_attacks(config)
    robust = {column: clean_correct.copy() for column in COLUMNS}
    first_broken = np.full(len(images), np.nan)
    records = []
    norm_caches, caches = {}, {}  # by cache group; by attack name
    for name in config.attacks:
        attack = REGISTRY[name]
        home = shared_caches if attack.cache_scope == "suite" else norm_caches
        caches[name] = home.setdefault(attack.cache_group or name, {})
    stages = registry.stages(config, target, norm, sources)
    bar = progress.bar(len(budgets) * max(1, len(stages)),
                       f"[{target.name}] {norm} attacks, budgets {list(budgets)}")
    done = 0
    for eps in sorted(budgets):
        if prior_smallest is not None:
            gone = np.asarray(prior_smallest) <= eps  # NaN (never broken) compares False
            for column in robust:
                robust[column] &= ~gone
        worst = robust["worst_case"]
        carried = int(np.sum(clean_correct & ~worst))
        record = {"norm": norm, "budget": float(eps), "carried_over": carried, "stages": []}
        for stage in stages:
            record["stages"].append(
                _run_stage(run, stage, eps, robust, members, caches, first_broken))
            done += 1
            if bar is not None:
                bar.update(done, values=[("robust", float(worst.mean()))])
        records.append(_finish_record(record, robust, members))
    smallest = np.where(clean_correct, first_broken, 0.0)
    return records, smallest


def _run_stage(run, stage, eps, robust, members, caches, first_broken):
    """One stage at `eps` on the images its columns have standing; its breaks
    marked in those columns (and in `first_broken`); returns its record."""
    attack = REGISTRY[stage.attack]
    settings = stage.settings
    columns = [c for c in COLUMNS if attack.name in members[c]]
    standing = np.logical_or.reduce([robust[c] for c in columns])
    idx = np.flatnonzero(standing)
    if attack.select is not None:
        idx = attack.select(idx, run.config.attack_settings[attack.name],
                            caches[attack.name])
    started = time.perf_counter()
    fooled_count = new_in_worst_case = 0
    worst = robust["worst_case"]
    if len(idx) and eps > 0:
        broken = _broken(run, attack, settings, idx, eps, caches[attack.name])
        new = broken[worst[broken]]
        first_broken[new] = eps
        for column in columns:
            robust[column][broken] = False
        fooled_count, new_in_worst_case = int(len(broken)), int(len(new))
    return {
        "stage": stage.name,
        "attack": attack.name,
        "kind": attack.kind,
        **settings,
        "attacked": int(len(idx)),
        "fooled": fooled_count,
        "fooled_new_worst_case": new_in_worst_case,
        "accuracy_after": float(worst.mean()),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _broken(run, attack, settings, idx, eps, cache):
    """The indices of `idx` whose images the attack breaks at `eps`."""
    source = next((s for s in run.sources if s.name == settings.get("source")), None)
    per_image_bar = None
    if attack.per_image and run.progress.enabled:
        per_image_bar = run.progress.bar(
            len(idx), f"  {attack.name} eps={eps} on {len(idx)} images")
    tick = (lambda: per_image_bar.add(1)) if per_image_bar is not None else None
    adversarial = attack.craft(registry.StageInput(
        target=run.target, source=source, images=run.images[idx], labels=run.labels[idx],
        idx=idx, norm=run.norm, eps=eps, config=run.config, settings=settings,
        cache=cache, progress=tick, seed=run.seed,
        options=run.config.attack_settings[attack.name]))
    attacks.check_budget(run.images[idx], adversarial, run.norm, eps)
    return idx[attacks.predict(run.target.fn, adversarial) != run.labels[idx]]


def _finish_record(record, robust, members):
    """`record` with the worst case, every column and the chain at its budget."""
    record["robust_accuracy"] = float(robust["worst_case"].mean())
    record["columns"] = {
        column: float(robust[column].mean()) if members[column] or column in _CHAIN
        else None
        for column in COLUMNS}
    record["column_attacks"] = {c: sorted(members[c]) for c in COLUMNS}
    # The chain, under the names the results report reads.
    for kind, column in zip(registry.KINDS, _CHAIN):
        record[f"accuracy_after_{kind}"] = record["columns"][column]
    paper = record["columns"]["paper_protocol"]
    record["paper_protocol_overstates"] = (
        None if paper is None else paper - record["robust_accuracy"])
    return record
