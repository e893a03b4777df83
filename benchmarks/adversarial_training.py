"""Training-step time of adversarial training against plain training.

    python -m benchmarks.adversarial_training [--model hah_vgg_small]
        [--batch-size 128] [--steps 5] [--warmup 2] [--eps 0.1]

Builds the same network three times (same seed): plain `HebbianModel`
training, FGSM with a random start (1 attack step) and PGD-7 (7 attack
steps), L-inf, compiled as a user would (Adam 1e-3, sparse cross-entropy).
Times `train_on_batch` in turns (plain, FGSM-RS, PGD-7, plain, ...), so
that other load on the machine hits all three alike, and prints ms/step
(median wall time), img/s, each one's wall time over plain training's, and
the same in process CPU time (which other load disturbs less). An attack
step is a forward pass and a backward pass to the input only, so the
expected ratios are a little under 2x (FGSM-RS) and 8x (PGD-7), plus one
forward pass for batch norm's clean statistics (the default; the
`fgsm_rs_bn_adversarial` row is FGSM-RS without it).
"""

import argparse

from benchmarks import common

#: name -> adversarial options (None: plain training). The default
#: `batch_norm_statistics="clean"` adds a forward pass on the clean batch
#: (no gradient) to set batch norm's moving statistics; `_bn_adversarial`
#: is the step without it (the option's other value), for its cost.
VARIANTS = {
    "plain": None,
    "fgsm_rs": {"attack": "fgsm_rs"},
    "fgsm_rs_bn_adversarial": {"attack": "fgsm_rs", "batch_norm_statistics": "adversarial"},
    "pgd7": {"attack": "pgd", "steps": 7},
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.adversarial_training",
        description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="hah_vgg_small",
                        help="a keras_hebb.architectures preset")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget")
    return parser


def _compiled(preset, adversarial, eps):
    import keras

    from keras_hebb import HebbianModel, architectures

    keras.utils.set_random_seed(0)
    model = HebbianModel.from_model(
        architectures.PRESETS[preset](),
        adversarial=None if adversarial is None else {**adversarial, "eps": eps})
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(argv=None):
    args = build_parser().parse_args(argv)
    machine = common.machine_description()
    import numpy as np

    models = {name: _compiled(args.model, options, args.eps)
              for name, options in VARIANTS.items()}
    shape = models["plain"].input_shape[1:]
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size).astype("int64")
    times = common.interleaved(
        {name: (lambda m=model: m.train_on_batch(x, y)) for name, model in models.items()},
        args.steps, warmup=args.warmup)
    common.print_header(machine, "benchmarks.adversarial_training", argv,
                        f"oneDNN {'on' if common.onednn_enabled() else 'off'}")
    plain = common.median_ms(times["plain"]["wall"])
    plain_cpu = common.median_ms(times["plain"]["cpu"])
    rows = []
    for name in VARIANTS:
        ms = common.median_ms(times[name]["wall"])
        cpu = common.median_ms(times[name]["cpu"])
        rows.append([name, f"{ms:.1f}", f"{args.batch_size / ms * 1e3:.1f}",
                     f"{ms / plain:.2f}x", f"{cpu:.1f}", f"{cpu / plain_cpu:.2f}x"])
    print(f"{args.model}, batch {args.batch_size}, L-inf eps {args.eps}, "
          f"median of {args.steps} steps:")
    print(common.markdown_table(
        ["training", "ms/step", "img/s", "time / plain", "CPU ms/step", "CPU / plain"],
        rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
