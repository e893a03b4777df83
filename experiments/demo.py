"""`python -m experiments demo`: the main job, end to end, on Fashion-MNIST.

    python -m experiments demo --out runs/demo            # make demo
    python -m experiments demo --out /tmp/demo --tiny     # the test's budget

Each step is the program a user would run, called in this process (one
TensorFlow start instead of four) with the same arguments:

1. train three CPU-sized networks (`python -m training train`): the
   standard one (`fashion_mnist_vgg_small.yaml`), the paper's HaH design
   at alphas where its cost acts (`fashion_mnist_hah_small_x30.yaml`) and
   the robust recipe (`fashion_mnist_robust_hah_small.yaml`: the HaH cost
   with divisive normalization, no threshold);
2. evaluate them side by side with the quick robustness suite
   (`python -m training evaluate`);
3. export the robust recipe: SavedModel + TFLite float32 and int8, verified
   (`python -m export`);
4. write `OUT/report.md`: what each network shows (three lines computed
   from the numbers), training metrics, the robustness table and plots,
   the export verification.

Steps already done are reused (training runs finished in OUT, an existing
evaluation or export), so an interrupted demo continues where it stopped;
an interrupted training run resumes from its last checkpoint.
"""

import json
import os
import sys
import time

from export.cli import Parser, UsageError, prepare_tensorflow, usage_failure
from experiments import steps
from experiments.networks import NETWORKS, ROOT, TINY_TRAINING, config_path

prepare_tensorflow()  # before the steps import TensorFlow

#: The three networks the demo trains, side by side.
CONFIGS = {
    "standard": NETWORKS["small"]["standard"],
    "hah": "training/configs/fashion_mnist_hah_small_x30.yaml",
    "recipe": "training/configs/fashion_mnist_robust_hah_small.yaml",
}
#: What each network is, in the report's opening lines.
DESCRIPTIONS = {
    "standard": "conv, ReLU, batch norm; cross-entropy only",
    "hah": "the paper's HaH design: divisive normalization and the top-20% threshold, "
           "with the HaH cost at 30x the paper's alphas",
    "recipe": "the robust recipe: the HaH cost at 30x with divisive normalization "
              "and no threshold",
}
#: The network the demo exports (the one the project recommends).
EXPORTED = "recipe"
#: Budgets and noise level quoted in the opening lines.
HEADLINE_BUDGETS = (("linf", 0.05), ("l2", 0.5))
HEADLINE_SIGMA = 0.3

#: Budgets: `--set` overrides of the training configs and the arguments of
#: the evaluation and export programs.
BUDGETS = {
    "demo": {
        "train": [],
        "evaluate": ["--suite", "quick", "--images", "300"],
        "export": ["--tflite", "float32,int8"],
    },
    "tiny": {
        "train": TINY_TRAINING,
        "evaluate": ["--suite", "quick", "--images", "24",
                     "--attacks", "fgsm,pgd_ce,bpda,transfer",
                     "--linf-budgets", "0.05,0.3", "--l2-budgets", "0.5",
                     "--noise-sigmas", "0.1,0.3"],
        # A one-epoch model on 512 images is near chance, so its int8 copy
        # can lose a few of 100 verification images to quantization: the
        # tiny budget checks the pipeline, the demo budget the 1-point drop.
        "export": ["--tflite", "float32,int8", "--verify-images", "100",
                   "--calibration-images", "64", "--max-accuracy-drop", "5"],
    },
}


def _read(path):
    with open(path) as f:
        return f.read()


def _latest_version(export_dir):
    versions = [int(v) for v in os.listdir(export_dir) if v.isdigit()] \
        if os.path.isdir(export_dir) else []
    return max(versions) if versions else None


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _points(value, reference):
    if value is None or reference is None:
        return "n/a"
    return f"{100 * (value - reference):+.1f} points"


def _network_numbers(out, name, entry):
    """The numbers the opening lines quote, from the run's files."""
    with open(os.path.join(out, name, "metrics.json")) as f:
        metrics = json.load(f)
    robust = {(norm, float(r["budget"])): r["robust_accuracy"]
              for norm, records in entry["attacks"].items() for r in records}
    noise = {float(n["sigma"]): n["accuracy"] for n in entry["noise"]}
    # The first two blocks: the HaH blocks' outputs, the standard network's
    # ReLU outputs (before batch norm) at the same depth.
    layers = [s for s in entry.get("sparsity") or []
              if s["layer"] in ("block1_hah", "block2_hah", "block1_relu", "block2_relu")]
    failed = sorted(k for k, c in entry["checks"].items() if c.get("passed") is False)
    not_run = sorted(k for k, c in entry["checks"].items() if c.get("status") == "not run")
    return {"test": (metrics.get("final") or {}).get("val_accuracy"),
            "robust": {key: robust.get(key) for key in HEADLINE_BUDGETS},
            "noise": noise.get(HEADLINE_SIGMA),
            "nonzero": (sum(s["nonzero_fraction"] for s in layers) / len(layers)
                        if layers else None),
            "failed_checks": failed, "checks_not_run": not_run,
            "checks_passed": entry.get("checks_passed")}


def _checks_text(numbers):
    """What the sanity checks say: passed, failed (named), or not run (named)."""
    parts = []
    if numbers["failed_checks"]:
        parts.append(f"failed sanity checks: {', '.join(numbers['failed_checks'])} "
                     "(robustness may be overstated by gradient masking: the worst case "
                     "includes BPDA and black-box attacks)")
    if numbers["checks_not_run"]:
        parts.append(f"sanity checks not run: {', '.join(numbers['checks_not_run'])}")
    if numbers["checks_passed"] and not numbers["failed_checks"] and not numbers["checks_not_run"]:
        return "every sanity check passed"
    if not parts:
        return "sanity checks incomplete"
    return "; ".join(parts)


def what_each_network_shows(out):
    """The report's opening lines: one per network, its numbers against the
    standard network's, computed from `OUT/robustness/report.json` and the
    runs' `metrics.json` (nothing in them is written by hand)."""
    with open(os.path.join(out, "robustness", "report.json")) as f:
        report = json.load(f)
    numbers = {name: _network_numbers(out, name, report["models"][name]) for name in CONFIGS}
    standard = numbers["standard"]
    lines = []
    for name, n in numbers.items():
        versus = name != "standard"

        def compare(value, reference, versus=versus):
            return f" ({_points(value, reference)})" if versus else ""
        attacks = "; ".join(
            f"{'L∞' if norm == 'linf' else 'L2'} {budget:g} {_percent(n['robust'][norm, budget])}"
            f"{compare(n['robust'][norm, budget], standard['robust'][norm, budget])}"
            for norm, budget in HEADLINE_BUDGETS)
        checks = _checks_text(n)
        lines.append(
            f"- **{name}** ({DESCRIPTIONS[name]}): test accuracy {_percent(n['test'])}"
            f"{compare(n['test'], standard['test'])}; worst-case robust accuracy "
            f"{attacks}; Gaussian noise σ {HEADLINE_SIGMA:g} {_percent(n['noise'])}"
            f"{compare(n['noise'], standard['noise'])}; non-zero activations in the "
            f"first two blocks {_percent(n['nonzero'])}; {checks}.")
    return lines


def _scope_line(out):
    """What the opening lines rest on: epochs, suite, images; where the study is."""
    with open(os.path.join(out, "robustness", "report.json")) as f:
        settings = json.load(f)["settings"]
    with open(os.path.join(out, "standard", "metrics.json")) as f:
        epochs = len(json.load(f)["epochs"])
    study = os.path.relpath(os.path.join(ROOT, "docs", "RESULTS.md"), out)
    return (f"One seed, {epochs} epoch(s), the {settings['name']} attack suite on the first "
            f"{settings['images']} test images; in brackets the difference to the standard "
            f"network. The study behind the recipe (3 seeds, the full suite with AutoAttack's "
            f"components, certification) is [docs/RESULTS.md]({study}).")


def write_report(out, timings):
    """`out/report.md` from the outputs the steps left in `out`."""
    lines = ["# keras-hebb demo: standard, HaH and the robust recipe on Fashion-MNIST", "",
             "Made by `make demo` (`python -m experiments demo`). Every number "
             "below comes from the files next to this report.", "",
             "## What each network shows", "",
             _scope_line(out), "",
             *what_each_network_shows(out), "",
             "## Training", "",
             "| model | config | epochs | train accuracy | test accuracy | wall time |",
             "|---|---|---|---|---|---|"]
    for name, config in CONFIGS.items():
        with open(os.path.join(out, name, "metrics.json")) as f:
            history = json.load(f)
        epochs = history["epochs"] if isinstance(history, dict) and "epochs" in history \
            else history
        last = epochs[-1]
        test = last.get("val_accuracy", float("nan"))
        lines.append(f"| {name} | `{config}` | {len(epochs)} | "
                     f"{last.get('accuracy', float('nan')):.4f} | {test:.4f} | "
                     f"{timings.get('train ' + name, float('nan')):.0f} s |")
    lines += ["", "## Robustness (quick suite)", "",
              "From `robustness/report.md`; robust accuracy is the per-image "
              "worst case over every attack of the suite.", ""]
    robustness = _read(os.path.join(out, "robustness", "report.md")).replace(
        "](", "](robustness/").splitlines()
    # Its title is this section's; its headings go two levels down.
    lines += ["##" + line if line.startswith("#") else line for line in robustness[1:]]
    plots = sorted(p for p in os.listdir(os.path.join(out, "robustness"))
                   if p.endswith(".png"))
    lines += ["", "### Plots", ""] + [f"![{p}](robustness/{p})" for p in plots]
    version = _latest_version(os.path.join(out, "export"))
    lines += ["", f"## Export of the {EXPORTED} model", "",
              f"SavedModel (TF Serving layout) and TFLite files in "
              f"`export/{version}/`; verification against the Keras model:", ""]
    lines.append(_read(os.path.join(out, "export", str(version), "verification.md")))
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _run_steps(out, budget):
    """Trains, evaluates and exports what has no output yet; returns the
    training steps' seconds."""
    timings = {}
    for name, config in CONFIGS.items():
        timings["train " + name] = steps.run(
            f"train {name}", "train",
            ["--config", config_path(config), "--out", os.path.join(out, name),
             "--skip-finished", *budget["train"]])
    robustness = os.path.join(out, "robustness")
    if not os.path.exists(os.path.join(robustness, "report.md")):
        steps.run("evaluate", "evaluate", [
            "--model", *[os.path.join(out, name, "model.keras") for name in CONFIGS],
            "--dataset", "fashion_mnist", "--out", robustness, *budget["evaluate"]])
    if _latest_version(os.path.join(out, "export")) is None:
        steps.run("export", "export", [os.path.join(out, EXPORTED, "model.keras"),
                        "--out", os.path.join(out, "export"), *budget["export"]])
    return timings


def main(argv=None):
    parser = Parser(prog="python -m experiments demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny budget (seconds, for tests)")
    start = time.time()
    try:
        args = parser.parse_args(argv)
        out = os.path.abspath(args.out)
        os.makedirs(out, exist_ok=True)
        timings = _run_steps(out, BUDGETS["tiny" if args.tiny else "demo"])
    except UsageError as error:
        return usage_failure(error)
    report = write_report(out, timings)
    print(f"\nDemo finished in {time.time() - start:.0f} s. Report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
