"""Escalation: a model that shows a sign of gradient masking is attacked
again at AutoAttack's strength before the suite reports it.

Why. A suite whose gradient-free attack is cheap can pass a masked model
with every check green: on `hah_pgd_at` (results/fashion_mnist_defenses),
the full suite's Square at 500 queries broke about one image in a hundred
beyond the white-box attacks (under the checks' margin), so it reported
55% at L-inf 0.05, while AutoAttack's Square at 5,000 queries leaves 43%
on the same images. Running Square at 5,000 queries on every model would
multiply the full suite's time by about 3 (Square at 500 is already about
a third of it), so it runs only where a cheap sign says it is needed.

The rule (`SuiteConfig.escalate`, on in the `FULL` preset). After both
norms' cascades, the suite looks for signs of masking (`masking_signs`):

- `threshold`: the model has a hard top-k or adaptive threshold layer
  (every such network of the studies masked gradients);
- `black_box_beyond_white_box`: at some budget a black-box attack (Square,
  transfer, SPSA) broke an image that every white-box attack left
  standing: gradients missed an adversarial example a random search found;
- `bpda_beyond_plain`: BPDA broke an image the plain gradients could not;
- `zero_gradients`: the input gradients of the margin loss are zero or not
  finite on more than `checks.ZERO_GRADIENT_LIMIT` of the check images.

Only the first rests on what the model declares; the other three read the
attacks' own results, so a user's masked layer (a rounding, a hard top-k
without a surrogate) is caught by its behaviour. One image is enough to
escalate: escalation costs time, never a verdict. On the studies'
networks without a threshold (standard, recipe, their adversarially and
noise-trained versions) none of the behavioural signs fired in 500 or
1,000 images but once (one image, one budget), so they keep their time.

When a sign fired, every budget of both norms is attacked again, in its
own cascade on the images the suite left standing, with Square at
AutoAttack's standard strength (`ESCALATED_SQUARE_QUERIES`, fresh random
draws: seed + `ESCALATION_SEED_OFFSET`). Its breaks count in the worst
case (the reported number); each record keeps the worst case before
escalation, and the check `strong_attacks_add_little` (`checks`) fails,
naming the gap, when the escalated attack broke more than the checks'
tolerance beyond the suite.
"""

import dataclasses
import time

import numpy as np

from keras_hebb.robustness import attacks, checks, resume
from keras_hebb.robustness.cascade import evaluate_norm
from keras_hebb.robustness.registry import REGISTRY

#: Square's queries once escalated: AutoAttack's standard strength
#: (Croce & Hein 2020), ten times the full preset's 500.
ESCALATED_SQUARE_QUERIES = REGISTRY["square"].settings_for("autoattack_standard")["queries"]
#: Added to the suite's seed for the escalated attacks: a new random
#: search, not a replay of the suite's Square draws.
ESCALATION_SEED_OFFSET = 1
#: Signs of masking, in the order they are reported.
SIGNS = ("threshold", "black_box_beyond_white_box", "bpda_beyond_plain", "zero_gradients")


def escalated_config(config):
    """The `SuiteConfig` of the escalated cascade: Square alone, at
    `ESCALATED_SQUARE_QUERIES`, on `config`'s budgets."""
    square = {**config.attack_settings.get("square", REGISTRY["square"].defaults),
              "queries": ESCALATED_SQUARE_QUERIES}
    return dataclasses.replace(config, attacks=("square",), attack_settings={"square": square},
                               escalate=False)


def masking_signs(target, records, images, labels, config):
    """The signs of gradient masking (names from `SIGNS`) that `target`
    shows in its cascade `records` (both norms) and in its input gradients
    on the first `config.check_images` images."""
    found = []
    if target.has_threshold:
        found.append("threshold")
    columns = [r["columns"] for r in records]
    if any(c["white_box"] - c["worst_case"] > 0 for c in columns):
        found.append("black_box_beyond_white_box")
    if any(c["plain_gradients"] - c["white_box"] > 0 for c in columns):
        found.append("bpda_beyond_plain")
    n = min(config.check_images, len(images))
    gradients = checks.gradient_check([("plain", target.fn)], images[:n], labels[:n], config)
    if not gradients["passed"]:
        found.append("zero_gradients")
    return found


def escalate(target, images, labels, clean_correct, norm, budgets, config, records,
             smallest, progress, seed, resume_dir=None, key=None):
    """Runs the escalated cascade of one norm on the images the suite left
    standing; returns `(records, smallest, seconds)` with its breaks merged
    in (`seconds`: what it took in an earlier run when read back from
    `resume_dir`, else 0).

    Each record gets the escalated stages (names ending `_escalated`),
    its new worst case, `worst_case_before_escalation` and
    `escalation_gain` (before - after, points as fractions).
    """
    saved = resume.load(resume_dir, target.name, f"{norm}_escalated", key)
    if saved is not None:
        return saved[0], np.asarray(saved[1], np.float64), saved[2]
    started = time.perf_counter()
    smallest = np.asarray(smallest, np.float64)
    with attacks.global_seed(seed + ESCALATION_SEED_OFFSET):
        extra, extra_smallest = evaluate_norm(
            target, [], images, labels, clean_correct, norm, budgets,
            escalated_config(config), {}, progress, seed=seed + ESCALATION_SEED_OFFSET,
            prior_smallest=smallest)
    merged = [_merge(record, more) for record, more in zip(records, extra)]
    # The earlier of the two (NaN: never broken); the escalation can break an
    # image at a smaller budget than the suite did.
    combined = np.fmin(smallest, extra_smallest)
    resume.save(resume_dir, target.name, f"{norm}_escalated", key, merged, combined,
                time.perf_counter() - started)
    return merged, combined, 0.0


def _merge(record, more):
    """`record` (the suite's) with the escalated cascade's record `more` at
    the same budget: its stages appended, its worst case reported."""
    before = record["robust_accuracy"]
    after = more["columns"]["worst_case"]
    merged = {**record, "columns": {**record["columns"], "worst_case": after}}
    merged["stages"] = list(record["stages"]) + [
        {**s, "stage": s["stage"] + "_escalated", "escalated": True} for s in more["stages"]]
    merged["robust_accuracy"] = after
    merged["accuracy_after_black_box"] = after
    merged["worst_case_before_escalation"] = before
    merged["escalation_gain"] = before - after
    paper = merged["columns"].get("paper_protocol")
    merged["paper_protocol_overstates"] = None if paper is None else paper - after
    return merged
