"""`python -m experiments kept-models`: the committed model files a claim rests on.

    python -m experiments kept-models            # the kept set, per study
    python -m experiments kept-models --prune    # and delete the other model files

The studies under `results/` commit every run's reports, metrics and
config; a run's `model.keras` only when a stated claim rests on that
network (issue 36: the model files were most of the repository). A model
is kept when any of these holds (each kept path is printed with its
reasons):

- `named`: its run directory (`results/STUDY/runs/RUN`, or with
  `/model.keras`; brace lists `runs/{A,B}/` too) is named in README.md,
  docs/, examples/, tests/ (the committed-logits fixture's paths too), the
  Makefile, experiments/, benchmarks/ or keras_hebb/, or by a template a
  pattern cannot read (`NAMED_IN_TEXT`);
- `autoattack`: AutoAttack at its standard strength checked it (a report
  in `results/STUDY/eval_autoattack/RUN/`);
- `batchnorm`: a before/after seed of study 6's batch-norm collapse
  (`BATCHNORM_SEEDS`);
- `figure`: the front page's figure (`python -m experiments front`) plots
  it as a seed-2022 point or as a one-seed run;
- `report reads it`: its study's generated report is computed from the
  model files (the sweeps: each HaH block's kernel change and the filters
  plot, `experiments.sweep_report`);
- `transfer source`: it is the transfer source of a kept model (in that
  model's evaluation report), so that evaluation can be re-run; applied
  until nothing changes.

`--prune` deletes every other `results/*/runs/*/model.keras`, never one
under `UNTOUCHED`. A pruned run keeps `config.yaml` and `metrics.json`;
its study's report lists it and the command that retrains it (the study's
command with `--train-only --only RUN`): training is seeded and
deterministic on one machine, but another CPU's float rounding gives other
weights, so a retrained model is a re-run, not the committed network.
"""

import glob
import json
import os
import re
import sys

import numpy as np

from export.cli import Parser, UsageError, usage_failure
from experiments import full_autoattack
from experiments.steps import load_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "model.keras"
#: Studies this command neither judges nor prunes: one being written keeps
#: every model file until it ends (none now).
UNTOUCHED = ()
#: The files whose mentions of run directories keep a model (globs from the
#: repository root; this module itself is left out).
SOURCES = ("README.md", "docs/**/*.md", "examples/**/*", "tests/**/*.py", "Makefile",
           "experiments/*.py", "benchmarks/**/*.py", "keras_hebb/**/*.py")
#: `.npz` fixtures whose keys are model paths a test loads.
FIXTURES = ("tests/data/committed_model_logits.npz",)
#: A run directory as the sources name it: `results/STUDY/runs/RUN` or
#: `results/STUDY/runs/{RUN,RUN,...}`.
NAMED = re.compile(r"results/(\w+)/runs/(\{[\w,\s]+\}|\w+)")
#: Mentions a pattern cannot read: `(study, runs, where)`.
NAMED_IN_TEXT = (
    ("fashion_mnist", ("standard_s2022", "standard_s2023", "hah_s2022", "hah_s2023"),
     "docs/ROBUSTNESS.md: which transfer source is stronger, on the committed "
     "results/fashion_mnist/runs models"),
    ("fashion_mnist", ("hah_s2022", "hah_s2023", "hah_s2024"),
     "docs/results/paper_alphas.md: the HaH models' test accuracy "
     "(f'results/fashion_mnist/runs/{r}/model.keras')"),
    ("fashion_mnist_regime",
     tuple(f"{network}_s{seed}" for seed in (2022, 2023, 2024) for network in (
         "standard", "hah", "hah_no_threshold", "hah_alpha0", "hah_no_threshold_alpha0")),
     "docs/EXPORT.md: int8 agreement of the trained study networks "
     "($R/NETWORK_sS/model.keras, each seed S)"),
    ("fashion_mnist_defenses", ("standard_s2022", "hah_no_threshold_s2022"),
     "docs/ROBUSTNESS.md: the escalation rule's cost "
     "(results/fashion_mnist_defenses/runs/RUN)"),
    ("fashion_mnist_defenses", ("hah_pgd_at",),
     "keras_hebb/robustness/escalation.py, benchmarks/masking_escalation.py "
     "(--model-dir results/fashion_mnist_defenses --run hah_pgd_at)"),
)
#: Study 6's batch-norm collapse: the seeds checked before and after
#: recalibration (docs/TRAINING.md).
BATCHNORM_SEEDS = ("results/fashion_mnist_defenses/runs/standard_at_s2022",
                   "results/fashion_mnist_defenses/runs/recipe_at_s2023",
                   "results/fashion_mnist_defenses/runs/recipe_at_alpha0_s2023",
                   "results/fashion_mnist_defenses/runs/recipe_at_alpha0_s2024")


def studies(root=ROOT):
    """The folder names under `results/` that hold trained runs."""
    return sorted(os.path.basename(os.path.dirname(path))
                  for path in glob.glob(os.path.join(root, "results", "*", "runs")))


def run_dirs(root=ROOT, study=None):
    """`results/STUDY/runs/RUN` (relative to `root`) of every trained run,
    with or without its model file (a pruned run keeps its config)."""
    found = []
    for study_name in [study] if study else studies(root):
        for path in sorted(glob.glob(os.path.join(root, "results", study_name, "runs", "*"))):
            if any(os.path.exists(os.path.join(path, name))
                   for name in (MODEL, "config.yaml", "metrics.json")):
                found.append(os.path.relpath(path, root))
    return found


def _source_files(root):
    mine = os.path.abspath(__file__)
    for pattern in SOURCES:
        for path in sorted(glob.glob(os.path.join(root, pattern), recursive=True)):
            if os.path.isfile(path) and os.path.abspath(path) != mine:
                yield path


def _named(root, known):
    """`{run dir: [reason]}` of the run directories the sources name."""
    reasons = {}

    def add(run_dir, where):
        if run_dir in known:
            reasons.setdefault(run_dir, []).append(f"named: {where}")

    for path in _source_files(root):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        where = os.path.relpath(path, root)
        for study, runs in NAMED.findall(text):
            for run in runs.strip("{}").split(","):
                add(f"results/{study}/runs/{run.strip()}", where)
    for fixture in FIXTURES:
        with np.load(os.path.join(root, fixture)) as loaded:
            for key in loaded.files:
                add(os.path.dirname(key), f"{fixture} (a test loads it)")
    for study, runs, where in NAMED_IN_TEXT:
        for run in runs:
            add(f"results/{study}/runs/{run}", where)
    return {run_dir: sorted(set(why)) for run_dir, why in reasons.items()}


def _figure_points(root):
    """The run directories of the front page figure's seed-2022 points and
    one-seed runs."""
    from experiments import front, front_tables

    folders = {study.key: study.folder for study in front_tables.STUDIES}
    points = []
    for key, summary in front.load_studies(root).items():
        for name in front_tables.networks(key, summary):
            seeded = front_tables.runs(summary, name)
            for seed, model in seeded.items():
                if seed == 2022 or len(seeded) == 1:
                    points.append(f"results/{folders[key]}/runs/{model['name']}")
    return points


def _transfer_sources(root, run_dir):
    """The run directories of `run_dir`'s transfer sources (its evaluation
    report's settings)."""
    study_dir, run = run_dir.split("/runs/")
    report = load_json(os.path.join(root, study_dir, "eval", run, "report.json")) or {}
    sources = []
    for path in (report.get("settings") or {}).get("transfer_files") or []:
        model = os.path.normpath(os.path.join(study_dir, "eval", run, path))
        sources.append(os.path.dirname(model))
    return sources


def kept(root=ROOT):
    """`{results/STUDY/runs/RUN/model.keras: [reasons]}` of every model a
    claim rests on (the module's rules), studies under `UNTOUCHED` left out."""
    known = {d for d in run_dirs(root) if d.split("/")[1] not in UNTOUCHED}
    reasons = {}

    def add(run_dir, why):
        if run_dir in known and why not in reasons.setdefault(run_dir, []):
            reasons[run_dir].append(why)

    for run_dir, why in _named(root, known).items():
        for reason in why:
            add(run_dir, reason)
    for path in glob.glob(os.path.join(root, "results", "*", full_autoattack.FOLDER, "*",
                                       "report.json")):
        if (load_json(path) or {}).get("models"):
            run_folder = os.path.dirname(path)
            study = os.path.basename(os.path.dirname(os.path.dirname(run_folder)))
            add(f"results/{study}/runs/{os.path.basename(run_folder)}",
                "autoattack: checked at its standard strength")
    for run_dir in BATCHNORM_SEEDS:
        add(run_dir, "batchnorm: study 6's batch-norm collapse, before/after seed")
    for run_dir in _figure_points(root):
        add(run_dir, "figure: a seed-2022 or one-seed point of docs/results_front.png")
    for study in studies(root):
        if os.path.isdir(os.path.join(root, "results", study, "probe")):
            for run_dir in run_dirs(root, study):
                add(run_dir, "report reads it: the sweep's kernel change and filters plot")
    changed = True
    while changed:
        changed = False
        for run_dir in sorted(reasons):
            for source in _transfer_sources(root, run_dir):
                if source in known and source not in reasons:
                    changed = True
                add(source, f"transfer source of {run_dir.split('/runs/')[1]}")
    return {os.path.join(run_dir, MODEL): why for run_dir, why in sorted(reasons.items())}


def kept_paths(root=ROOT):
    """The set of `results/STUDY/runs/RUN/model.keras` a claim rests on."""
    return set(kept(root))


#: Each study folder's make target and the variable of its extra arguments.
MAKE_TARGETS = {"fashion_mnist_regime": ("results", "RESULTS_ARGS"),
                "fashion_mnist_medium": ("results-medium", "MEDIUM_ARGS"),
                "fashion_mnist_defenses": ("results-defenses", "DEFENSES_ARGS"),
                "fashion_mnist_front": ("results-front", "FRONT_ARGS")}


def not_committed(out, names=None):
    """The runs of a study folder whose training finished but whose model
    file is not there (pruned): `OUT/runs/RUN` with a final `metrics.json`
    and no `model.keras`; only those in `names` when given."""
    missing = []
    for path in sorted(glob.glob(os.path.join(out, "runs", "*"))):
        name = os.path.basename(path)
        if (names is None or name in names) and not os.path.exists(os.path.join(path, MODEL)) \
                and "final" in (load_json(os.path.join(path, "metrics.json")) or {}):
            missing.append(name)
    return missing


def retrain_command(out, command):
    """The command that retrains run NAME of the study in `out`: its make
    target with `--train-only --only NAME`, or (a study without one) the
    report's `command` with them instead of `--report-only`."""
    only = "--train-only --only NAME"
    target = MAKE_TARGETS.get(os.path.basename(os.path.normpath(out)))
    if target is not None:
        return f"make {target[0]} {target[1]}='{only}'"
    return " ".join([word for word in command.split(" ") if word != "--report-only"] + [only])


def retrain_lines(out, command, names=None):
    """The report's paragraph on the runs whose model file is not committed
    (nothing when every model is there)."""
    missing = not_committed(out, names)
    if not missing:
        return []
    return [f"Model files: committed only for the networks a claim rests on "
            f"(`python -m experiments kept-models` lists them and why). Not committed "
            f"({len(missing)}): {', '.join(missing)}; their configs, metrics and reports "
            f"are. `{retrain_command(out, command)}` retrains one (and rewrites its "
            f"`runs/NAME/metrics.json`; the reports stay). Training is seeded and "
            f"deterministic on one machine, but another CPU's float rounding gives other "
            f"weights: a retrained model is a re-run, not the committed network.", ""]


def _megabytes(paths, root):
    return sum(os.path.getsize(os.path.join(root, p)) for p in paths
               if os.path.exists(os.path.join(root, p))) / 1e6


def present(root=ROOT, study=None):
    """The `results/STUDY/runs/RUN/model.keras` in the tree: of one study,
    or of every study this command judges (not `UNTOUCHED`)."""
    chosen = [study] if study else [s for s in studies(root) if s not in UNTOUCHED]
    return [os.path.join(d, MODEL) for name in chosen for d in run_dirs(root, name)
            if os.path.exists(os.path.join(root, d, MODEL))]


def _parser():
    parser = Parser(prog="python -m experiments kept-models",
                    description=__doc__.split("\n")[0])
    never = f" (never under {', '.join('results/' + s for s in UNTOUCHED)})" if UNTOUCHED else ""
    parser.add_argument("--prune", action="store_true",
                        help=f"delete every results/*/runs/*/model.keras not kept{never}")
    parser.add_argument("--quiet", action="store_true",
                        help="only the per-study counts, not each kept path's reasons")
    return parser


def main(argv=None, root=ROOT):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except UsageError as error:
        return usage_failure(error)
    chosen = kept(root)
    if not args.quiet:
        for path, why in chosen.items():
            print(path)
            for reason in why:
                print(f"    {reason}")
        print()
    removed = []
    print(f"{'study':28} {'kept/total':>10} {'MB before':>10} {'MB after':>9}")
    totals = [0, 0, 0.0, 0.0]
    for study in studies(root):
        in_tree = present(root, study)
        if study in UNTOUCHED:
            print(f"{study:28} {'untouched':>10} {_megabytes(in_tree, root):10.1f} "
                  f"{_megabytes(in_tree, root):9.1f}")
            continue
        total = [os.path.join(d, MODEL) for d in run_dirs(root, study)]
        mine = [p for p in total if p in chosen]
        before = _megabytes(in_tree, root)
        after = _megabytes([p for p in in_tree if p in chosen], root)
        print(f"{study:28} {f'{len(mine)}/{len(total)}':>10} {before:10.1f} {after:9.1f}")
        totals = [totals[0] + len(mine), totals[1] + len(total), totals[2] + before,
                  totals[3] + after]
        if args.prune:
            for path in in_tree:
                if path not in chosen:
                    os.remove(os.path.join(root, path))
                    removed.append(path)
    print(f"{'all judged studies':28} {f'{totals[0]}/{totals[1]}':>10} {totals[2]:10.1f} "
          f"{totals[3]:9.1f}")
    if args.prune:
        print(f"\nDeleted {len(removed)} model files:")
        for path in removed:
            print(f"  {path}")
    else:
        print("\n(--prune deletes the model files not kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
