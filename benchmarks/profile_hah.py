"""Where the time of a HaH training step goes: an ablation, timed in turns.

    python -m benchmarks.profile_hah [--preset small|vgg16] [--batch 128]
        [--steps 5] [--warmup 2]

Builds variants of the HaH network that each leave one part out and times
their training steps in turns (one process, oneDNN as in the environment;
the Makefile and this program's default turn it on):

- `full`: the HaH network as shipped (`HebbianModel.train_step`);
- `top_k selection`: the same, with the threshold and the cost finding
  their k-th values with `top_k` (the portable path) instead of the linear
  selection used in training on TensorFlow/CPU;
- `no HaH cost`: the same layers in a plain `keras.Model` (no cost, no
  layer-local branch);
- `no threshold`, `no divisive normalization`: HaH blocks without them;
- `standard`: the BatchNorm baseline.

The differences to `full` are the cost of each part (wall and process CPU
time; CPU time is less sensitive to other load on the machine).
"""

import argparse
import sys

from benchmarks import common

PRESETS = {
    "small": ("hah_vgg_small", "vgg_small_bn", (28, 28, 1)),
    "vgg16": ("hah_vgg16", "vgg16_bn", (32, 32, 3)),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_hah", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    return parser


def _variants(preset):
    import keras

    from keras_hebb import architectures

    hah, standard, shape = PRESETS[preset]
    build = architectures.PRESETS[hah]

    def plain():
        model = build(input_shape=shape)
        return keras.Model(model.inputs, model.outputs, name="no_cost")

    return shape, {
        "full": (lambda: build(input_shape=shape), True),
        "top_k selection": (lambda: build(input_shape=shape), False),
        "no HaH cost": (plain, True),
        "no threshold": (lambda: build(input_shape=shape,
                                       block_options={"threshold": None}), True),
        "no divisive normalization": (
            lambda: build(input_shape=shape,
                          block_options={"normalization_field": None}), True),
        "standard": (lambda: architectures.PRESETS[standard](input_shape=shape), True),
    }


def profile(preset, batch, steps, warmup):
    """Returns {variant: {"wall": [...], "cpu": [...]}}."""
    import keras
    import numpy as np

    from keras_hebb import _selection

    shape, variants = _variants(preset)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    native = _selection._native_selection_available
    steps_of = {}
    for name, (build, fast_selection) in variants.items():
        keras.utils.set_random_seed(2022)
        model = build()
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # The selection path is chosen when the step is traced (first call).
        if not fast_selection:
            _selection._native_selection_available = lambda: False
        try:
            model.train_on_batch(x, y)
        finally:
            _selection._native_selection_available = native
        steps_of[name] = lambda m=model: m.train_on_batch(x, y)
    return common.interleaved(steps_of, steps, warmup)


def report(times):
    full_wall = common.median_ms(times["full"]["wall"])
    full_cpu = common.median_ms(times["full"]["cpu"])
    rows = []
    for name, t in times.items():
        wall, cpu = common.median_ms(t["wall"]), common.median_ms(t["cpu"])
        rows.append([name, wall, cpu, f"{wall - full_wall:+.0f}", f"{cpu - full_cpu:+.0f}"])
    table = common.markdown_table(
        ["variant", "ms/step", "CPU ms/step", "wall vs full", "CPU vs full"], rows)
    parts = []
    for label, name in [("HaH cost + layer-local branch", "no HaH cost"),
                        ("fractional threshold", "no threshold"),
                        ("divisive normalization", "no divisive normalization")]:
        saved = full_cpu - common.median_ms(times[name]["cpu"])
        parts.append(f"- {label}: {saved:.0f} CPU ms/step "
                     f"({100 * saved / full_cpu:.0f}% of the HaH step)")
    gain = common.median_ms(times["top_k selection"]["cpu"]) - full_cpu
    parts.append(f"- linear selection instead of top_k saves {gain:.0f} CPU ms/step")
    extra = full_cpu - common.median_ms(times["standard"]["cpu"])
    parts.append(f"- HaH step over the standard step: {extra:+.0f} CPU ms/step")
    return table + "\n\n" + "\n".join(parts)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        print(f"profile_hah: expected --batch >= 1, --steps >= 1, --warmup >= 0; "
              f"received {args.batch}, {args.steps}, {args.warmup}", file=sys.stderr)
        return 2
    if "tensorflow" not in sys.modules:
        from export.cli import set_tf_environment_defaults

        set_tf_environment_defaults()  # before TensorFlow is imported
    machine = common.machine_description()
    times = profile(args.preset, args.batch, args.steps, args.warmup)
    common.print_header(machine, "benchmarks.profile_hah", argv,
                        f"oneDNN {'on' if common.onednn_enabled() else 'off'}")
    print(report(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
