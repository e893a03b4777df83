"""Cost of the robustness suite per attack, and its projection to 1,000 images.

    python -m benchmarks.robustness_suite [--suite full] [--images 100]
        [--model results/fashion_mnist/runs/hah_s2022/model.keras]
        [--transfer-from results/fashion_mnist/runs/standard_s2022/model.keras]

Runs `keras_hebb.robustness.suite.run_suite` on one model (the transfer
sources only serve as sources) over the first `--images` Fashion-MNIST test
images, and prints, per attack, the seconds it took (summed over budgets,
norms, restarts), the seconds per 100 images, and the projected minutes for
1,000 images: an attack's cost grows with the images it attacks, so the
projection scales each stage's seconds by its projected images over its
measured ones, with the suite's caps (SPSA `spsa_images` per Linf budget,
CW-L2 `cw_images`, sanity checks `check_images`) applied. The whole
suite's time is the goal of issue 16: at most 15 minutes per small model
on 1,000 images on 2 cores.
"""

import argparse
import collections
import os
import time

from benchmarks import common

DEFAULT_MODEL = "results/fashion_mnist/runs/hah_s2022/model.keras"
DEFAULT_SOURCE = "results/fashion_mnist/runs/standard_s2022/model.keras"
PROJECTED_IMAGES = 1000


def _projected(attacked, measured_images, images, cap):
    """Images a stage would attack on `images` images, from `attacked` on
    `measured_images` (a capped stage that hit its cap stays there)."""
    scaled = attacked * images / measured_images
    if cap is None:
        return scaled
    return cap if attacked >= cap else min(cap, scaled)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness_suite",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=("quick", "full"), default="full")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--transfer-from", nargs="*", default=[DEFAULT_SOURCE])
    parser.add_argument("--attacks", default=None,
                        help="comma-separated subset of the suite's attacks")
    parser.add_argument("--restarts", type=int, default=None,
                        help="restarts of PGD-CE, PGD-margin and BPDA (default: the suite's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default=None, metavar="REPORT.json",
                        help="also write the suite's results (as report.json) there")
    return parser


def _config(args):
    """The suite preset with `--attacks` and `--restarts` applied."""
    import dataclasses

    from keras_hebb.robustness import suite

    config = suite.PRESETS[args.suite]
    if args.attacks:
        config = dataclasses.replace(config, attacks=tuple(args.attacks.split(",")))
    if args.restarts:
        config = config.with_settings(**{
            name: {"restarts": args.restarts} for name in ("pgd_ce", "pgd_margin", "bpda")
            if name in config.attacks})
    return config


def _load_models(args):
    """`(target name, {name: model})`: the model under test and its sources."""
    import keras

    import keras_hebb  # noqa: F401  (registers the layers)

    target = os.path.splitext(os.path.basename(os.path.dirname(args.model)))[0] or "target"
    models = {target: keras.saving.load_model(args.model)}
    for path in args.transfer_from:
        models["source_" + os.path.basename(os.path.dirname(path))] = \
            keras.saving.load_model(path)
    return target, models


def _cost_rows(entry, config, images):
    """Per attack and part: seconds, images attacked, seconds per 100
    images and the projection to `PROJECTED_IMAGES`; then the total."""
    # Attacks on a capped subset (SPSA, CW-L2) keep their cap at scale.
    caps = {name: settings["images"] for name, settings in config.attack_settings.items()
            if "images" in settings}
    seconds, attacked = collections.Counter(), collections.Counter()
    projected = collections.Counter()
    for norm_records in entry["attacks"].values():
        for record in norm_records:
            for stage in record["stages"]:
                name = stage["attack"]
                seconds[name] += stage["seconds"]
                attacked[name] += stage["attacked"]
                if stage["attacked"]:
                    images_then = _projected(stage["attacked"], images,
                                             PROJECTED_IMAGES, caps.get(name))
                    projected[name] += stage["seconds"] * images_then / stage["attacked"]
    timing = entry.get("timing", {})
    for part, cap in (("noise", None), ("checks", config.check_images)):
        if part in timing:
            seconds[part] = timing[part]
            n = min(images, cap) if cap else images
            projected[part] = timing[part] * _projected(n, images, PROJECTED_IMAGES,
                                                        cap) / n
    rows = []
    for name, value in sorted(seconds.items(), key=lambda item: -item[1]):
        rows.append([name, f"{value:.1f}", str(attacked.get(name, "-")),
                     f"{100 * value / images:.1f}", f"{projected[name] / 60:.1f}"])
    total = sum(projected.values())
    rows.append(["total (suite)", f"{entry['seconds']:.1f}", "",
                 f"{100 * entry['seconds'] / images:.1f}", f"{total / 60:.1f}"])
    return rows


def main(argv=None):
    args = _parser().parse_args(argv)
    machine = common.machine_description()
    common.set_onednn(True)

    import numpy as np

    from keras_hebb import data
    from keras_hebb.robustness import suite

    config = _config(args)
    common.print_header(machine, "benchmarks.robustness_suite", argv, "oneDNN on")
    target, models = _load_models(args)
    images, labels = data.load_arrays("fashion_mnist", "test", args.images)
    images = np.asarray(images, np.float32)
    started, cpu_started = time.perf_counter(), time.process_time()
    results = suite.run_suite(models, images, labels, config, seed=args.seed,
                              transfer_sources={target: [m for m in models if m != target]},
                              progress=False, evaluate=[target])
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    entry = results["models"][target]
    if args.report:
        import json

        with open(args.report, "w") as f:
            json.dump(results, f, indent=1)
    rows = _cost_rows(entry, config, args.images)
    print(f"Suite {config.name}, model {args.model}, {args.images} images "
          f"(clean accuracy {entry['clean_accuracy']:.3f}): wall {wall:.0f} s, process CPU "
          f"{cpu:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")
    print(common.markdown_table(
        ["attack", "seconds", "images attacked (all stages)", "s per 100 images",
         f"projected min for {PROJECTED_IMAGES} images"], rows))
    worst = {norm: [round(100 * r["robust_accuracy"], 1) for r in records]
             for norm, records in entry["attacks"].items()}
    print(f"Worst case (%): {worst}")
    failed = [k for k, c in entry["checks"].items() if c["passed"] is False]
    not_run = [k for k, c in entry["checks"].items() if c["passed"] is None]
    print(f"Checks: failed {', '.join(failed) or 'none'}; not run {', '.join(not_run) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
