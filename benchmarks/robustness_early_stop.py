"""The suite's cascade with and without the early-stopping PGD/BPDA, image by image.

    python -m benchmarks.robustness_early_stop [--images 300]
        [--model results/fashion_mnist/runs/hah_s2022/model.keras]

Runs the quick suite's per-image-seeded attacks (fgsm, pgd_ce, pgd_margin,
apgd_ce, apgd_t, bpda) twice on the same images, once with
`attacks.pgd(..., early_stop=False)` forced, and prints how many images
the early stop breaks at a smaller / larger budget and every column at
every budget, before -> after. The early stop must never be weaker: no
image at a larger budget, no column higher.
"""

import argparse
import dataclasses
import time

from benchmarks import common

COLUMNS = ("gradient_only", "plain_gradients", "white_box", "worst_case", "paper_protocol")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness_early_stop",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--model", default="results/fashion_mnist/runs/hah_s2022/model.keras")
    args = parser.parse_args(argv)
    machine = common.machine_description()
    common.set_onednn(True)

    import keras
    import numpy as np

    import keras_hebb  # noqa: F401  (registers the layers)
    from keras_hebb import data
    from keras_hebb.robustness import attacks, suite

    common.print_header(machine, "benchmarks.robustness_early_stop", argv, "oneDNN on")
    model = keras.saving.load_model(args.model)
    x, y = data.load_arrays("fashion_mnist", "test", args.images)
    x = np.asarray(x, np.float32)
    config = dataclasses.replace(suite.QUICK, attacks=(
        "fgsm", "pgd_ce", "pgd_margin", "apgd_ce", "apgd_t", "bpda"))
    original = attacks.pgd
    runs = {}
    try:
        for early_stop in (False, True):
            def pgd(*positional, **keywords):
                if "early_stop" in keywords:  # the suite's stages only
                    keywords["early_stop"] = early_stop
                return original(*positional, **keywords)

            attacks.pgd = pgd
            started = time.perf_counter()
            entry = suite.run_suite({"model": model}, x, y, config, seed=0,
                                    progress=False)["models"]["model"]
            runs[early_stop] = (entry, time.perf_counter() - started)
    finally:
        attacks.pgd = original
    (before, seconds_before), (after, seconds_after) = runs[False], runs[True]
    for norm in before["attacks"]:
        a, b = (np.array([np.inf if v is None else v for v in run["smallest_breaking_budget"][norm]])
                for run in (before, after))
        print(f"{norm}: with the early stop {int(np.sum(b < a))} images break at a smaller "
              f"budget, {int(np.sum(b > a))} at a larger one")
        for r, s in zip(before["attacks"][norm], after["attacks"][norm]):
            print(f"  {norm} {r['budget']:g}: " + ", ".join(
                f"{c} {100 * r['columns'][c]:.1f} -> {100 * s['columns'][c]:.1f}"
                for c in COLUMNS))
    print(f"Seconds without / with the early stop: {seconds_before:.0f} / {seconds_after:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
