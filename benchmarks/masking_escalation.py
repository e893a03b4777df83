"""The escalation rule against AutoAttack: figures for docs/ROBUSTNESS.md.

    # a full-suite report (python -m training evaluate --suite full) against
    # a committed AutoAttack report on the same images, per L-inf budget:
    python -m benchmarks.masking_escalation compare REPORT.json [AUTOATTACK.json] \\
        [--baseline OLD_REPORT.json]

    # a committed masked model on a few images the old suite left standing
    # and AutoAttack broke (read from the committed reports): old and new suite
    python -m benchmarks.masking_escalation subset [--model-dir \\
        results/fashion_mnist_defenses] [--run hah_pgd_at] [--per-group 8]

`compare` prints, at each L-inf budget up to 0.1, the suite's worst case,
its worst case before escalation, AutoAttack's, the per-image worst case
of both (the union) and the suite's distance to it, then the checks (with
the gap a failed one names) and the rule's time: the escalation's seconds
(the masking signs, and Square at 5,000 queries when a sign fired) out of
the model's total, and with `--baseline` (the same command run by the
suite before the rule) the two totals and their ratio.

`subset` runs a cut-down full suite (PGD-margin, APGD-CE, Square at 500
queries; one budget, L-inf 0.05) with and without escalation on images
where the committed full report says robust and the committed AutoAttack
report says broken (`--per-group` of them) plus as many robust under both,
and prints each run's number, checks and seconds.
"""

import argparse
import json
import os

from benchmarks import common

MAX_BUDGET = 0.1
SUBSET_BUDGET = 0.05


def _smallest(report, norm="linf"):
    """`(name, entry, each image's smallest breaking budget)` of a
    single-model report (inf: never broken; 0: misclassified clean)."""
    import numpy as np

    (name, entry), = report["models"].items()
    values = entry["smallest_breaking_budget"][norm]
    return name, entry, np.array([np.inf if v is None else v for v in values], np.float64)


def _compare_rows(suite_report, autoattack_report):
    """Per L-inf budget <= MAX_BUDGET: suite, before escalation, AutoAttack,
    union, suite - union (accuracies as fractions)."""
    import numpy as np

    _, entry, ours = _smallest(suite_report)
    _, _, theirs = _smallest(autoattack_report)
    n = min(len(ours), len(theirs))
    if len(ours) != len(theirs):
        print(f"(reports on {len(ours)} and {len(theirs)} images: the first {n} compared)")
    ours, theirs = ours[:n], theirs[:n]
    records = {r["budget"]: r for r in entry["attacks"]["linf"]}
    rows = []
    for eps in sorted(b for b in records if b <= MAX_BUDGET):
        suite_acc = float(np.mean(ours > eps))
        before = records[eps].get("worst_case_before_escalation")
        union = float(np.mean(np.minimum(ours, theirs) > eps))
        rows.append([eps, suite_acc, before, float(np.mean(theirs > eps)), union,
                     suite_acc - union])
    return rows


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def compare(args):
    """Prints the `compare` figures."""
    with open(args.report) as f:
        suite_report = json.load(f)
    name, entry, _ = _smallest(suite_report)
    print(f"model {name}, {suite_report['settings']['images']} images, suite "
          f"{suite_report['settings']['name']}")
    if args.autoattack:
        _print_table(suite_report, args.autoattack)
    _print_checks_and_time(entry, args.baseline)


def _print_table(suite_report, autoattack_path):
    with open(autoattack_path) as f:
        autoattack_report = json.load(f)
    rows = _compare_rows(suite_report, autoattack_report)
    print("| L-inf | suite | before escalation | AutoAttack | union | suite - union |")
    print("|---|---|---|---|---|---|")
    for eps, suite_acc, before, autoattack, union, gap in rows:
        print(f"| {eps:g} | {_percent(suite_acc)} | {_percent(before)} | "
              f"{_percent(autoattack)} | {_percent(union)} | {100 * gap:+.1f} |")


def _print_checks_and_time(entry, baseline):
    escalation = entry.get("escalation") or {}
    print(f"signs of masking: {escalation.get('signs')}, escalated: {escalation.get('ran')}")
    for key, check in entry["checks"].items():
        status = check.get("status")
        message = f" -- {check['message']}" if check.get("message") else ""
        print(f"  {key}: {status}{message}")
    rule = float((entry.get("timing") or {}).get("escalation", 0.0))
    total = float(entry["seconds"])
    print(f"time: {total:.0f} s in all, {rule:.1f} s of it the rule's "
          f"({100 * rule / max(total - rule, 1e-9):.1f}% on top of the rest)")
    if baseline:
        with open(baseline) as f:
            _, old, _ = _smallest(json.load(f))
        print(f"baseline (suite before the rule): {old['seconds']:.0f} s; new/old "
              f"{total / old['seconds']:.2f}; old checks: "
              + ", ".join(f"{k} {c.get('status')}" for k, c in old["checks"].items()))


def _subset_indices(model_dir, run, per_group):
    """Images (of the first 100) the committed full suite left standing at
    SUBSET_BUDGET: `per_group` AutoAttack broke there, `per_group` it did not."""
    import numpy as np

    def load(folder):
        with open(os.path.join(model_dir, folder, run, "report.json")) as f:
            return _smallest(json.load(f))[2]

    autoattack = load("eval_autoattack")
    suite_said = load("eval")[:len(autoattack)]
    standing = suite_said > SUBSET_BUDGET
    gap = np.flatnonzero(standing & (autoattack <= SUBSET_BUDGET))[:per_group]
    both = np.flatnonzero(standing & (autoattack > SUBSET_BUDGET))[:per_group]
    return np.sort(np.concatenate([gap, both])), len(gap)


def subset(args):
    """Runs and prints the `subset` figures."""
    import dataclasses
    import time

    import keras
    import numpy as np

    import keras_hebb  # noqa: F401  (registers the layers)
    from keras_hebb import data
    from keras_hebb.robustness import suite

    idx, broken_by_autoattack = _subset_indices(args.model_dir, args.run, args.per_group)
    images, labels = data.load_arrays("fashion_mnist", "test", 100)
    x, y = np.asarray(images, np.float32)[idx], np.asarray(labels)[idx]
    model = keras.saving.load_model(os.path.join(args.model_dir, "runs", args.run,
                                                 "model.keras"))
    config = dataclasses.replace(
        suite.FULL, linf_budgets=(SUBSET_BUDGET,), l2_budgets=(), noise_sigmas=(0.1,),
        noise_draws=1, attacks=("pgd_margin", "apgd_ce", "square"), check_images=len(idx),
        check_steps=(5, 10), large_budget_steps=5)
    print(f"{args.run}: {len(idx)} images ({broken_by_autoattack} that the committed "
          f"AutoAttack broke at L-inf {SUBSET_BUDGET:g} and the committed suite did not)")
    for escalate in (False, True):
        started = time.perf_counter()
        results = suite.run_suite({args.run: model}, x, y,
                                  dataclasses.replace(config, escalate=escalate), seed=0,
                                  progress=False)
        entry = results["models"][args.run]
        record = entry["attacks"]["linf"][0]
        failed = {k: c.get("message") for k, c in entry["checks"].items()
                  if c["passed"] is False}
        print(f"escalate={escalate}: robust {_percent(record['robust_accuracy'])} "
              f"({time.perf_counter() - started:.0f} s), checks "
              f"{'FAILED ' + json.dumps(failed) if failed else 'all passed'}")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.masking_escalation",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("compare", help="a full-suite report against AutoAttack's")
    one.add_argument("report")
    one.add_argument("autoattack", nargs="?", default=None,
                     help="the committed AutoAttack report (omit: checks and time only)")
    one.add_argument("--baseline", default=None)
    two = commands.add_parser("subset", help="old and new suite on a committed masked model")
    two.add_argument("--model-dir", default="results/fashion_mnist_defenses")
    two.add_argument("--run", default="hah_pgd_at")
    two.add_argument("--per-group", type=int, default=8)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    machine = common.machine_description()
    common.set_onednn(True)
    common.print_header(machine, "benchmarks.masking_escalation", argv, "oneDNN on")
    (compare if args.command == "compare" else subset)(args)


if __name__ == "__main__":
    main()
