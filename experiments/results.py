"""`python -m experiments results`: the experiment behind docs/RESULTS.md.

    python -m experiments results --out results/fashion_mnist        # make results
    python -m experiments results --out /tmp/r --tiny                 # the test's budget

Fashion-MNIST, the CPU-sized standard and HaH networks of `make demo`
trained with the same budget for several seeds, plus one-seed ablations
that take one part away at a time:

- `hah_alpha0`: the HaH network without the HaH cost (alpha = 0);
- `hah_no_dn`: without divisive normalization;
- `hah_no_threshold`: without the top-fraction threshold;
- `hah_no_threshold_alpha0`: without the threshold and without the HaH cost
  (the twin that shows what the cost adds when there is no threshold);
- `standard_pruned90`: the standard network with 90% of its weights
  removed by gradual magnitude pruning (does weight sparsity alone buy
  noise robustness?).

The defenses experiment's runs (`experiments.defenses`: adversarial and
noise training, the continuous threshold; `make results-defenses`) are
entries of `ABLATIONS` too, selected by name only (the default
`--ablations` is `STUDY_ABLATIONS`).

Every model is evaluated alone (`python -m training evaluate`) on the same
first `--images` test images, noise draws and attack seeds, with the full
suite. The transfer attack's source is a strong one: for a HaH network
the standard network of the same seed (unmasked gradients); for a standard
network another standard seed (the next one, same architecture; with a
single seed, the HaH network of that seed, attacked through its BPDA
surrogates by the suite's `transfer_bpda`); for every ablation the
standard network of the first seed. Each step is skipped when its output
exists, so an interrupted run continues where it stopped (a training run
resumes from its last epoch). A model is trained only when a step of the
call needs it: a run's own when its evaluation or AutoAttack step is
pending (or with `--train-only`), its transfer source when its evaluation
is; so on a checkout whose uncommitted model files were pruned
(`python -m experiments kept-models`) with every report present nothing is
trained, and `--train-only --only NAME` retrains NAME's model.
`OUT/results.md` (tables, goals, plots) and `OUT/results.json` are written
from the files of the finished steps.
"""

import json
import os
import sys
import time
from typing import NamedTuple

from export.cli import Parser, UsageError, prepare_tensorflow, usage_failure
from experiments import (defenses, docs, full_autoattack, results_summary, results_tables,
                         steps)
from experiments.networks import NETWORKS, TINY_TRAINING, config_path

prepare_tensorflow()  # before the steps import TensorFlow

#: name -> (base network, `--set` overrides, what it tests).
ABLATIONS = {
    "hah_alpha0": ("hah", ["hah_alphas=0.0"],
                   "HaH network without the HaH cost (alpha = 0)"),
    "hah_no_dn": ("hah", ["block_options.normalization_field=null"],
                  "HaH network without divisive normalization"),
    "hah_no_threshold": ("hah", ["block_options.threshold=null"],
                         "HaH network without the threshold"),
    "hah_no_threshold_alpha0": ("hah", ["block_options.threshold=null", "hah_alphas=0.0"],
                                "HaH network without the threshold and without the HaH "
                                "cost (divisive normalization only)"),
    "standard_pruned90": ("standard", ["prune_to=0.9"],
                          "standard network, 90% of weights pruned by magnitude"),
    "standard_noise": ("standard", ["noise_sigma=0.25"],
                       "standard network trained with Gaussian noise (sigma 0.25, as "
                       "randomized smoothing's base classifiers)"),
    "hah_demote01": ("hah", ["block_options.cost_demote=0.1"],
                     "HaH network with the anti-Hebbian term weighted 0.1 (the authors' "
                     "training loop) instead of 1 (their cost function's default)"),
    "hah_torch_init": ("hah", ["weight_init=torch"],
                       "HaH network from PyTorch's default weight initialization (the "
                       "authors' code)"),
}
#: The default of `--ablations` (`make results`): the ablations above,
#: without the defenses experiment's runs merged in below.
STUDY_ABLATIONS = tuple(ABLATIONS)
ABLATIONS.update(defenses.DEFENSES)
BUDGETS = {
    "full": {"train": [], "evaluate": ["--suite", "full"], "images": 1000,
             "certify": ["--certify-sigmas", "0.12,0.25,0.5", "--certify-images", "100"],
             "autoattack": ["--suite", "full", *full_autoattack.ARGUMENTS]},
    "tiny": {
        "train": TINY_TRAINING,
        "evaluate": ["--suite", "quick", "--attacks", "fgsm,pgd_ce,bpda,transfer",
                     "--linf-budgets", "0.02,0.1", "--l2-budgets", "0.5,2",
                     "--noise-sigmas", "0.1,0.3"],
        "images": 32,
        "certify": ["--certify-sigmas", "0.25", "--certify-images", "8",
                    "--certify-n", "64", "--certify-n0", "16"],
        "autoattack": ["--suite", "quick", *full_autoattack.ARGUMENTS,
                       "--linf-budgets", "0.02,0.1", "--l2-budgets", "0.5,2"],
    },
}
#: Goals of the HaH network against the standard one (issue 6), in points.
GOALS = {"clean_drop_max": 2.0, "noise_gain_min": 20.0,
         "robust_gain_min": 10.0, "robust_band": (0.10, 0.30),
         "nonzero_ratio_max": 0.25}


#: The seed-by-seed differences the report adds where both networks ran
#: (`results_summary.comparisons`): the robust recipe against the standard
#: network, then those of the defenses study (`defenses.PAIRS`).
PAIRS = (("hah_no_threshold", "standard"),) + defenses.PAIRS


class Run(NamedTuple):
    """One trained and evaluated network of the experiment."""

    #: Its folder under `OUT/runs/` and `OUT/eval/` (`hah_s2022`).
    name: str
    #: The network it is built from: a key of a `NETWORKS` entry.
    base: str
    #: `python -m training train --set` overrides (`KEY=VALUE`).
    overrides: list
    seed: int
    #: The run whose model is the source of its transfer attack.
    transfer_source: str
    #: What it tests, for the report.
    description: str


def plan(seeds, ablations, seeded=(), hah_overrides=()):
    """The `Run`s in the order they are made.

    The ablations in `seeded` run for every seed (`hah_alpha0_s2022`, ...),
    the others once, with the first seed. `hah_overrides` (`KEY=VALUE`)
    apply to every run whose base is the HaH network, before the
    ablation's own (so `hah_alpha0` stays at alpha 0).

    Transfer sources: a HaH network's is the standard network of its seed;
    a standard network's the standard network of the next seed (cyclically;
    with one seed, the HaH network of that seed); a seeded ablation's the
    standard network of its seed, a one-seed ablation's that of the first
    seed (an adversarially trained run's too: why, in
    `experiments.defenses`).
    """
    runs = []
    for i, seed in enumerate(seeds):
        other = seeds[(i + 1) % len(seeds)]
        runs.append(Run(f"standard_s{seed}", "standard", [f"seed={seed}"], seed,
                        f"standard_s{other}" if other != seed else f"hah_s{seed}",
                        "standard network"))
        runs.append(Run(f"hah_s{seed}", "hah", [f"seed={seed}", *hah_overrides], seed,
                        f"standard_s{seed}", "HaH network"))
        for name in seeded:
            base, overrides, description = ABLATIONS[name]
            extra = list(hah_overrides) if base == "hah" else []
            runs.append(Run(f"{name}_s{seed}", base, [f"seed={seed}", *extra, *overrides],
                            seed, f"standard_s{seed}", description))
    for name in ablations:
        if name in seeded:
            continue
        base, overrides, description = ABLATIONS[name]
        extra = list(hah_overrides) if base == "hah" else []
        runs.append(Run(name, base, [f"seed={seeds[0]}", *extra, *overrides], seeds[0],
                        f"standard_s{seeds[0]}", description))
    return runs


def run_all(out, runs, budget, images, record, certify=False, train_only=False,
            configs=None, autoattack_images=0, autoattack_runs=None, only=None,
            evaluated=None):
    """Makes every step of the runs that has no output yet; `record(step,
    seconds)` after each step, so an interrupted call keeps the times of
    the steps it finished. `configs` maps the base names to training
    configs (default: the small network's); with `autoattack_images`, each
    model is also attacked on that many first images by AutoAttack at its
    standard strength (`full_autoattack`): the runs named in
    `autoattack_runs`, or every run when it is None. With `only` (run
    names), only those runs are made, in that order, their transfer sources
    still those of the whole plan. With `evaluated` (run names), the other
    runs are never evaluated: they are in the plan as transfer sources only.

    A model is trained (when its `model.keras` is missing) only when a step
    needs it: a run's own model when its evaluation or its AutoAttack step
    is pending, or with `train_only` (which makes no other step: it trains
    every run, or the `only` ones, and the transfer sources of those whose
    evaluation is pending); its transfer source only when its evaluation is
    pending. So a checkout whose model files were pruned
    (`experiments.kept_models`) but whose reports are all there trains
    nothing."""
    configs = configs or NETWORKS["small"]
    by_name = {run.name: run for run in runs}
    for run in runs if only is None else [by_name[name] for name in only]:
        report = steps.load_json(os.path.join(out, "eval", run.name, "report.json"))
        evaluate = not (report or {}).get("models") and (
            evaluated is None or run.name in evaluated)
        strong = os.path.join(out, full_autoattack.FOLDER, run.name)
        autoattack = bool(autoattack_images and (
            autoattack_runs is None or run.name in autoattack_runs) and not (
            steps.load_json(os.path.join(strong, "report.json")) or {}).get("models"))
        # Train a run and its transfer source before the steps that use them.
        needed = []
        if train_only or evaluate or autoattack:
            needed.append(run)
        if evaluate:
            needed.append(by_name[run.transfer_source])
        for trained in needed:
            if not os.path.exists(os.path.join(out, "runs", trained.name, "model.keras")):
                sets = [a for o in trained.overrides for a in ("--set", o)]
                record("train " + trained.name, steps.run(
                    f"train {trained.name}", "train",
                    ["--config", config_path(configs[trained.base]),
                     "--out", os.path.join(out, "runs", trained.name), "--skip-finished",
                     *budget["train"], *sets]))
        if train_only:
            continue
        if evaluate:
            record("evaluate " + run.name, steps.run(
                f"evaluate {run.name}", "evaluate",
                ["--model", os.path.join(out, "runs", run.name, "model.keras"),
                 "--transfer-from",
                 os.path.join(out, "runs", run.transfer_source, "model.keras"),
                 "--dataset", "fashion_mnist", "--images", str(images),
                 "--out", os.path.join(out, "eval", run.name), *budget["evaluate"],
                 *(budget["certify"] if certify else [])]))
        if autoattack:
            record("autoattack " + run.name, steps.run(
                f"autoattack {run.name}", "evaluate",
                ["--model", os.path.join(out, "runs", run.name, "model.keras"),
                 "--dataset", "fashion_mnist", "--images", str(autoattack_images),
                 "--out", strong, *budget["autoattack"]]))


def _parser():
    parser = Parser(prog="python -m experiments results", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/fashion_mnist", help="output directory")
    parser.add_argument("--network", default="small", choices=sorted(NETWORKS),
                        help="the standard and HaH networks: small (hah_vgg_small, 3 "
                        "epochs) or medium (hah_vgg_medium, 15 epochs) (default: small)")
    parser.add_argument("--seeds", default="2022,2023,2024",
                        help="comma-separated seeds of the standard and HaH networks "
                        "(default: 2022,2023,2024)")
    parser.add_argument("--ablations", default=",".join(STUDY_ABLATIONS),
                        help=f"comma-separated subset of {', '.join(ABLATIONS)} "
                        f"(default: {', '.join(STUDY_ABLATIONS)}; 'none' for none)")
    parser.add_argument("--seeded", default="none",
                        help="comma-separated ablations to run for every seed, e.g. "
                        "hah_alpha0 (default: none)")
    parser.add_argument("--hah-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of every HaH-based run (repeatable), e.g. "
                        "--hah-set hah_alphas=[0.45,0.25]")
    parser.add_argument("--certify", action="store_true",
                        help="also certify every model by randomized smoothing "
                        "(sigmas 0.12, 0.25, 0.5 on the first 100 images)")
    parser.add_argument("--section", default=None,
                        help="put the tables into the DOC.md between "
                        "'<!-- results-SECTION:begin -->' and '<!-- results-SECTION:end -->' "
                        "instead (and no summary)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images attacked (default: 1000; --tiny 32)")
    parser.add_argument("--autoattack-images", type=int, default=0, metavar="N",
                        help="also attack each model's first N test images with "
                        "AutoAttack at its standard strength (APGD-CE 100 x 5, APGD-T "
                        "100 x 9 targets, Square 5,000 queries) (default: 0, none)")
    parser.add_argument("--autoattack-runs", default="all", metavar="NAMES",
                        help="comma-separated runs given --autoattack-images, e.g. "
                        "standard_s2022,hah_s2022 (default: all)")
    parser.add_argument("--only", default="all", metavar="NAMES",
                        help="comma-separated runs to make now, in this order, e.g. "
                        "hah_no_threshold_s2023,hah_no_threshold_alpha0_s2023 (the report "
                        "still covers every finished run) (default: all)")
    parser.add_argument("--evaluate", default="all", metavar="NAMES",
                        help="comma-separated runs the study evaluates and reports (a "
                        "--seeded ablation's name: all its seeds); the others are "
                        "trained only as the transfer sources of those (default: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="only write the report from the finished steps")
    parser.add_argument("--train-only", action="store_true",
                        help="only train: every run's model (or the --only runs') whose "
                        "model.keras is missing, and the transfer sources of those not "
                        "yet evaluated; the evaluations in a later call (without it, a "
                        "model is trained only for a pending evaluation or AutoAttack "
                        "step: a pruned model file is not made again needlessly)")
    parser.add_argument("--docs", nargs="+", default=[], metavar="DOC.md",
                        help="also put the tables into each DOC.md: all of them between "
                        "its '<!-- results:begin -->' and '<!-- results:end -->' lines, "
                        "the main table and the goals between "
                        "'<!-- results-summary:begin -->' and '<!-- results-summary:end -->'")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (tests)")
    return parser


def _comma_list(text):
    """`'a, b'` -> `['a', 'b']`; `'none'` -> `[]`."""
    return [] if text.strip() == "none" else [a.strip() for a in text.split(",") if a.strip()]


def _settings(args):
    """The checked `(out, runs, budget, images)` of the arguments, the
    output directory made; `UsageError` if wrong."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError
    except ValueError:
        raise UsageError(f"--seeds must be integers >= 0, received "
                         f"{args.seeds!r}") from None
    ablations, seeded = _comma_list(args.ablations), _comma_list(args.seeded)
    unknown = [a for a in ablations + seeded if a not in ABLATIONS]
    if unknown:
        raise UsageError(f"unknown ablation {unknown[0]!r}; expected some of "
                         f"{', '.join(ABLATIONS)} or 'none'")
    budget = BUDGETS["tiny" if args.tiny else "full"]
    images = args.images if args.images is not None else budget["images"]
    if images < 1:
        raise UsageError(f"--images must be >= 1, received {images}")
    if not 0 <= args.autoattack_images <= images:
        raise UsageError(f"--autoattack-images must be in [0, --images = {images}], "
                         f"received {args.autoattack_images}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    from training import config as training_config

    try:
        training_config.apply_overrides({}, args.hah_set)
    except training_config.ConfigError as error:
        raise UsageError(f"--hah-set: {error}") from None
    runs = plan(seeds, ablations, seeded, args.hah_set)
    args.autoattack_runs = _run_names(args.autoattack_runs, "--autoattack-runs", runs)
    args.only = _run_names(args.only, "--only", runs)
    seeded_runs = {name: [f"{name}_s{seed}" for seed in seeds] for name in seeded}
    args.evaluate = _run_names(",".join(
        ",".join(seeded_runs.get(name, [name])) for name in _comma_list(args.evaluate)),
        "--evaluate", runs)
    return out, runs, budget, images


def _run_names(value, option, runs):
    """The run names of a comma-separated option, None for 'all';
    `UsageError` for a name that is not a run of the plan."""
    if value.strip() == "all":
        return None
    names = {run.name for run in runs}
    chosen = _comma_list(value)
    missing = [name for name in chosen if name not in names]
    if missing:
        raise UsageError(f"{option}: {missing[0]!r} is not a run of this "
                         f"experiment; its runs are {', '.join(sorted(names))}")
    return chosen


def _run_steps(out, runs, budget, images, args, timings):
    """Trains and evaluates what has no output yet; each step's seconds,
    then the call's, into `timings` and `OUT/timings.json` as they end."""
    timings_path = os.path.join(out, "timings.json")

    def record(step, seconds):
        timings[step] = round(seconds, 1)
        with open(timings_path, "w") as f:
            json.dump(timings, f, indent=1)

    started = time.time()
    run_all(out, runs, budget, images, record, args.certify, args.train_only,
            NETWORKS[args.network], args.autoattack_images, args.autoattack_runs,
            args.only, args.evaluate)
    record_call = {"seconds": round(time.time() - started, 1),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    timings.setdefault("calls", []).append(record_call)
    with open(timings_path, "w") as f:
        json.dump(timings, f, indent=1)


def _check_docs(paths, section):
    """`UsageError` if a document lacks the markers its tables go between."""
    pairs = [docs.section_markers(section)] if section else [
        (docs.BEGIN, docs.END), (docs.SUMMARY_BEGIN, docs.SUMMARY_END)]
    for path in paths:
        if not any(docs.has_markers(path, *pair) for pair in pairs):
            raise UsageError(f"{path} has no "
                             f"{' or '.join(repr(begin) for begin, _ in pairs)} line "
                             "and its end")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        _check_docs(args.docs, args.section)
        out, runs, budget, images = _settings(args)
        timings = steps.load_json(os.path.join(out, "timings.json")) or {}
        if not args.report_only:
            _run_steps(out, runs, budget, images, args, timings)
    except UsageError as error:
        return usage_failure(error)
    reported = [r for r in runs if args.evaluate is None or r.name in args.evaluate]
    summary = results_summary.collect(out, reported, PAIRS)
    path = results_tables.write(out, summary, timings, GOALS, steps.made_by(
        "results", argv, os.path.join(out, "results.md"), _parser()))
    print(f"\nResults: {path}")
    for doc in args.docs:
        docs.embed(doc, path, args.section)
        print(f"Tables copied into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
