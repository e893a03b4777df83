"""The attack suite's sanity checks: does a model's result show gradient masking?

`suite.run_suite` runs them on each model after its attacks, on the first
`check_images` images and the suite's per-budget records (Athalye et al.
2018; Carlini et al. 2019). Each check ends `pass`, `fail` or `not run`
(`status`; `passed` is True, False or None): a check whose attacks did not
run says so, it never passes. Gaps are in points of accuracy, i.e.
fractions of all evaluated images:
- `gradients`: input gradients (margin loss) are finite and not zero;
- `large_budget`: Linf PGD at eps 0.5 (enough to turn any image into
  uniform gray) brings accuracy to about 0;
- `large_budget_l2`: the same in L2, at half the square root of the
  number of pixel values (a ball that holds the Linf 0.5 cube);
- `more_steps`: at the Linf budget where the worst-case accuracy is
  nearest 50% (where it can fail), on the first `check_images` images:
  PGD with more steps does not raise accuracy (beyond the tolerance), and
  breaks at most the tolerance of the images the whole suite left standing
  there (the suite's number is converged in steps);
- `bpda_adds_little`: `plain_gradients - white_box <= CHECK_MARGIN` at every
  budget (if BPDA breaks many images that plain gradient attacks could
  not, plain gradients are masked and the number rests on BPDA); not run
  when no BPDA stage ran (no attack of kind `bpda`, or a model without
  declared surrogates);
- `black_box_not_stronger`: `white_box - worst_case <= CHECK_MARGIN` at
  every budget, and the per-image black-box attacks (SPSA) fool at most
  25% of the images they attack; not run unless a black-box attack ran on
  every standing image (Square, transfer; SPSA's subset cannot move the
  gap by the margin);
- `strong_attacks_add_little` (only in a suite with `escalate`, the full
  preset): when the model showed a sign of gradient masking
  (`escalation`), Square at AutoAttack's 5,000 queries broke at most the
  tolerance beyond the suite at every budget; passes when no sign fired.

The three gap checks tolerate `max(margin, CHECK_MIN_IMAGES / n)` on `n`
images (margin `CHECK_MARGIN`, `ESCALATION_MARGIN` for
`strong_attacks_add_little`): a gap of one or two images never fails them
(on 50 images, 2% is one image: sampling noise, not masking). A failing
check's `message` names the gap: columns, size, norm and budget.

`summary` turns them into the model's `checks_passed` and
`checks_complete`.
"""

import numpy as np

from keras_hebb.robustness import attacks
from keras_hebb.robustness.registry import REGISTRY

#: Margins of the pass/fail checks (fractions of the evaluated images).
CHECK_MARGIN = 0.03
#: A gap check never fails on this many images or fewer (see `tolerance`).
CHECK_MIN_IMAGES = 2
#: Margin of `strong_attacks_add_little`: 2 points, the distance to the
#: per-image worst case of suite and AutoAttack the full suite answers for.
#: An escalation that still breaks more than this beyond the suite says
#: the suite's attacks were not converged, and a stronger attack may find
#: as much again.
ESCALATION_MARGIN = 0.02
ZERO_GRADIENT_LIMIT = 0.01
LARGE_BUDGET = 0.5
LARGE_BUDGET_LIMIT = 0.05


def tolerance(images=None, margin=CHECK_MARGIN):
    """The gap checks' tolerance on `images` evaluated images (a fraction):
    `margin`, or `CHECK_MIN_IMAGES` images if that is more."""
    if not images:
        return margin
    return max(margin, CHECK_MIN_IMAGES / images)


def _within(gap, limit):
    # Accuracies are image fractions: 27/50 - 25/50 is 0.04000000000000004.
    return gap <= limit + 1e-9


def gradient_check(targets, images, labels, config):
    """Input gradients of the margin loss are finite and non-zero."""
    details = {}
    passed = True
    for label, fn in targets:
        grads = attacks.input_gradients(fn, images, labels, loss="margin",
                                        batch_size=config.batch_size)
        flat = grads.reshape(len(grads), -1)
        finite = bool(np.all(np.isfinite(flat)))
        zero = float(np.mean(np.all(flat == 0, axis=1))) if len(flat) else 0.0
        ok = finite and zero <= ZERO_GRADIENT_LIMIT
        details[label] = {"finite": finite, "zero_gradient_fraction": zero,
                          "mean_abs_gradient": float(np.mean(np.abs(flat))) if finite else None,
                          "passed": ok}
        passed &= ok
    return {"passed": bool(passed), "limit_zero_fraction": ZERO_GRADIENT_LIMIT,
            "details": details,
            "meaning": "input gradients of the margin loss are finite and non-zero"}


def sanity_checks(target, images, labels, records, config, seed, smallest_linf=None,
                  escalated=None):
    """The checks, each with its `status`. `smallest_linf`: each image's
    smallest breaking Linf budget in the worst case (0: misclassified
    clean, NaN: never). `escalated`: the suite's escalation entry (signs,
    whether it ran), for `strong_attacks_add_little` when
    `config.escalate`."""
    n = min(config.check_images, len(images))
    x, y = images[:n], labels[:n]
    fns = [("plain", target.fn)]
    if target.surrogates:
        modes = [m for name in config.attacks if REGISTRY[name].kind == "bpda"
                 for m in config.attack_settings[name].get("modes", ())]
        fns += [(f"bpda_{m}", target.bpda_fn(m)) for m in dict.fromkeys(modes)]
    checks = {
        "gradients": gradient_check(fns, x, y, config),
        "large_budget": _check_large_budget(target, fns, x, y, config, seed, "linf"),
        "large_budget_l2": _check_large_budget(target, fns, x, y, config, seed, "l2"),
        "more_steps": _check_more_steps(target, x, y, records, config, seed, smallest_linf),
        "bpda_adds_little": _check_bpda_adds_little(records, len(images)),
        "black_box_not_stronger": _check_black_box_not_stronger(records, len(images)),
    }
    if config.escalate:
        checks["strong_attacks_add_little"] = _check_strong_attacks_add_little(
            records, escalated or {}, len(images))
    for check in checks.values():
        check["status"] = ("not run" if check["passed"] is None
                           else "pass" if check["passed"] else "fail")
    return checks


def summary(checks, has_threshold):
    """`(checks_passed, checks_complete)` of a model's checks.

    `checks_passed`: no check failed, and, on a model with a threshold
    (where gradients can be masked), none was left unrun.
    `checks_complete`: every check ran.
    """
    complete = all(c["passed"] is not None for c in checks.values())
    failed = any(c["passed"] is False for c in checks.values())
    return (not failed and (complete or not has_threshold)), complete


def large_budget(norm, image_shape):
    """The budget of the `large_budget` checks: Linf 0.5 (any image can
    become uniform gray), L2 half the square root of the pixel values
    (the ball holds that Linf cube)."""
    if norm == "linf":
        return LARGE_BUDGET
    return LARGE_BUDGET * float(np.sqrt(np.prod(image_shape)))


def _check_large_budget(target, fns, x, y, config, seed, norm):
    """Margin PGD through every gradient at the large budget leaves about 0."""
    n = len(x)
    eps = large_budget(norm, x.shape[1:])
    steps = config.large_budget_steps
    correct = attacks.predict(target.fn, x) == y
    with attacks.global_seed(seed):
        for _, fn in fns:
            adversarial = attacks.pgd(fn, x, y, eps, norm, steps, loss="margin",
                                      batch_size=config.batch_size)
            correct &= attacks.predict(target.fn, adversarial) == y
    large = float(correct.mean()) if n else 0.0
    return {
        "passed": large <= LARGE_BUDGET_LIMIT, "norm": norm, "budget": eps,
        "accuracy": large, "limit": LARGE_BUDGET_LIMIT, "images": n,
        "attacks": [f"pgd_margin ({label})" for label, _ in fns], "steps": steps,
        "meaning": f"accuracy falls to about 0 at a large {'L-inf' if norm == 'linf' else 'L2'}"
                   " budget",
    }


def _check_more_steps(target, x, y, records, config, seed, smallest_linf):
    """More PGD steps neither raise accuracy nor break what the suite left."""
    n = len(x)
    # Where it can fail: the Linf budget whose worst-case accuracy is
    # nearest 50% (at a budget where accuracy is already ~0 it cannot).
    linf = [r for r in records if r["norm"] == "linf"]
    if linf:
        eps = min(linf, key=lambda r: (abs(r["robust_accuracy"] - 0.5), r["budget"]))["budget"]
    else:
        eps = 0.1
    few, many = config.check_steps
    accuracy = {}
    for steps in (few, many):
        with attacks.global_seed(seed):
            adversarial = attacks.pgd(target.fn, x, y, eps, "linf", steps, loss="margin",
                                      batch_size=config.batch_size)
        accuracy[steps] = float(np.mean(attacks.predict(target.fn, adversarial) == y))
        if steps == many:
            broken_by_many = attacks.predict(target.fn, adversarial) != y
    tolerance = max(CHECK_MARGIN, 1.0 / max(n, 1))
    # Converged: PGD with the most steps breaks few images the whole suite
    # left standing at that budget (else the suite's number is too high).
    if smallest_linf is not None and n:
        first = np.asarray(smallest_linf[:n], np.float64)
        standing = np.isnan(first) | (first > eps)
        missed = float(np.mean(standing & broken_by_many))
    else:
        missed = None
    raises = accuracy[many] > accuracy[few] + tolerance
    return {
        "passed": not raises and (missed is None or missed <= tolerance),
        "norm": "linf", "budget": eps, "attack": "pgd_margin", "steps": [few, many],
        "accuracy": [accuracy[few], accuracy[many]],
        "missed_by_suite": missed, "tolerance": tolerance, "images": n,
        "meaning": "more PGD steps neither raise accuracy nor break more than the "
                   "tolerance of the images the whole suite left standing (Linf budget "
                   "where the worst case is nearest 50%)",
    }


def _gap_message(what, beyond, gap, where, limit):
    """One sentence naming a failed gap check's gap."""
    norm, budget = where
    label = "L-inf" if norm == "linf" else "L2"
    return (f"{what} broke {100 * gap:.1f} points of the images beyond {beyond} at "
            f"{label} {budget:g} (tolerance {100 * limit:.1f})")


def _largest_gap(records, first, second):
    """`(largest column first - column second, (norm, budget) of it)`."""
    worst = 0.0
    where = None
    for record in records:
        diff = record["columns"][first] - record["columns"][second]
        if diff > worst:
            worst, where = diff, (record["norm"], record["budget"])
    return worst, where


def _ran(records, kind):
    """Whether a stage of `kind` that attacks every standing image ran."""
    return any(s["kind"] == kind and REGISTRY.get(s["attack"]) is not None
               and REGISTRY[s["attack"]].select is None
               for r in records for s in r["stages"])


def _check_bpda_adds_little(records, images=None):
    """BPDA breaks few images plain gradients could not (no masking)."""
    adaptive_gap, where = _largest_gap(records, "plain_gradients", "white_box")
    ran = _ran(records, "bpda")
    limit = tolerance(images)
    passed = _within(adaptive_gap, limit) if ran else None
    return {
        "passed": passed, "ran": ran,
        "largest_gap": adaptive_gap, "at": where, "margin": limit,
        "message": None if passed is not False else _gap_message(
            "BPDA (surrogate gradients)", "the plain gradient attacks", adaptive_gap, where,
            limit)
        + ": the plain gradients are masked",
        "columns": ["plain_gradients", "white_box"],
        "meaning": "BPDA (surrogate gradients) breaks few images that plain "
                   "gradient attacks (cleverhans, APGD) could not: "
                   "plain_gradients - white_box <= margin at every budget; a "
                   "failure means the plain gradients are masked; not run without "
                   "a BPDA stage (no surrogates declared, or no BPDA in the suite)",
    }


def _check_black_box_not_stronger(records, images=None):
    """The black-box attacks break few images the white-box ones could not."""
    black_gap, where = _largest_gap(records, "white_box", "worst_case")
    rates = [
        (s["fooled"], s["attacked"]) for r in records for s in r["stages"]
        if s["kind"] == "black_box" and s["attacked"]
        and REGISTRY.get(s["attack"]) is not None and REGISTRY[s["attack"]].per_image
    ]
    fooled = sum(f for f, _ in rates)
    attacked = sum(a for _, a in rates)
    rate = fooled / attacked if attacked else 0.0
    rate_ok = attacked < 4 or rate <= 0.25
    ran = _ran(records, "black_box")
    limit = tolerance(images)
    passed = (_within(black_gap, limit) and rate_ok) if ran else None
    if passed is not False:
        message = None
    elif not _within(black_gap, limit):
        message = (_gap_message("the black-box attacks", "the white-box attacks", black_gap,
                                where, limit)
                   + ": the white-box attacks' gradients are masked")
    else:
        message = f"SPSA fooled {fooled} of the {attacked} images it attacked (limit 25%)"
    return {
        "passed": passed, "ran": ran, "message": message,
        "largest_gap": black_gap, "at": where, "margin": limit,
        "spsa_fooled": fooled, "spsa_attacked": attacked, "spsa_rate_limit": 0.25,
        "columns": ["white_box", "worst_case"],
        "meaning": "the black-box attacks (Square, transfer, SPSA) break few images "
                   "that the white-box attacks could not: white_box - worst_case "
                   "<= margin at every budget, and SPSA fools <= 25% of its subset; "
                   "not run unless Square or transfer ran",
    }


def _check_strong_attacks_add_little(records, escalated, images=None):
    """Where a sign of masking fired, Square at AutoAttack's strength
    breaks few images beyond the suite (`escalation`)."""
    limit = tolerance(images, ESCALATION_MARGIN)
    gap, where = 0.0, None
    for record in records:
        diff = record.get("escalation_gain") or 0.0
        if diff > gap:
            gap, where = diff, (record["norm"], record["budget"])
    ran = bool(escalated.get("ran"))
    passed = _within(gap, limit)
    message = None
    if not passed:
        queries = (escalated.get("attacks") or {}).get("square", {}).get("queries")
        strength = f" ({queries:,} queries)" if queries else ""
        message = (_gap_message(f"Square at AutoAttack's strength{strength}",
                                "the suite's attacks", gap, where, limit)
                   + ": the suite's own attacks overstate robustness (gradient masking; "
                   "the worst case includes these breaks)")
    return {
        "passed": passed, "escalated": ran, "signs": list(escalated.get("signs") or []),
        "largest_gap": gap, "at": where, "margin": limit, "message": message,
        "columns": ["worst_case_before_escalation", "worst_case"],
        "meaning": "where a sign of gradient masking fired (a threshold layer, black-box "
                   "or BPDA breaks beyond the gradients, zero gradients), Square at "
                   "AutoAttack's 5,000 queries breaks at most 2 points (and 2 images) beyond "
                   "the suite's attacks at every budget; passes when no sign fired",
    }
