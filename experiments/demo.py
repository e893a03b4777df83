"""`python -m experiments demo`: the main job, end to end, on Fashion-MNIST.

    python -m experiments demo --out runs/demo            # make demo
    python -m experiments demo --out /tmp/demo --tiny     # the test's budget

Each step is the program a user would run, called in this process (one
TensorFlow start instead of four) with the same arguments:

1. train the standard and the HaH CPU-sized networks
   (`python -m training train`, configs `fashion_mnist_vgg_small.yaml` and
   `fashion_mnist_hah_small.yaml`);
2. evaluate both side by side with the quick robustness suite
   (`python -m training evaluate`);
3. export the HaH model: SavedModel + TFLite float32 and int8, verified
   (`python -m export`);
4. write `OUT/report.md`: training metrics, the robustness table and plots,
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
from experiments.networks import NETWORKS, TINY_TRAINING, config_path

prepare_tensorflow()  # before the steps import TensorFlow

#: The standard and the HaH network the demo trains.
CONFIGS = NETWORKS["small"]

#: Budgets: `--set` overrides of the training configs and the arguments of
#: the evaluation and export programs.
BUDGETS = {
    "demo": {
        "train": [],
        "evaluate": ["--suite", "quick", "--images", "500"],
        "export": ["--tflite", "float32,int8"],
    },
    "tiny": {
        "train": TINY_TRAINING,
        "evaluate": ["--suite", "quick", "--images", "24",
                     "--attacks", "fgsm,pgd_ce,bpda,transfer",
                     "--linf-budgets", "0.05,0.3", "--l2-budgets", "1.0",
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


def write_report(out, timings):
    """`out/report.md` from the outputs the steps left in `out`."""
    lines = ["# keras-hebb demo: standard vs HaH network on Fashion-MNIST", "",
             "Made by `make demo` (`python -m experiments demo`). Every number "
             "below comes from the files next to this report.", "",
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
    lines += ["", "## Export of the HaH model", "",
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
        steps.run("evaluate", "evaluate", ["--model",
                          os.path.join(out, "standard", "model.keras"),
                          os.path.join(out, "hah", "model.keras"),
                          "--dataset", "fashion_mnist", "--out", robustness,
                          *budget["evaluate"]])
    if _latest_version(os.path.join(out, "export")) is None:
        steps.run("export", "export", [os.path.join(out, "hah", "model.keras"),
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
