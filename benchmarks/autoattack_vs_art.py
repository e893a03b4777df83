"""The project's AutoAttack components against ART's, same model, images, settings.

    python -m benchmarks.autoattack_vs_art \\
        --model results/fashion_mnist_regime/runs/hah_no_threshold_s2022/model.keras \\
        [--images 50] [--norm linf] [--eps 0.05]

Runs APGD-CE (100 steps x 5 restarts), APGD-T (100 steps, 1 restart per
target, 9 target classes) and Square (5,000 queries, p_init 0.8), that is
AutoAttack's standard strength (Croce & Hein 2020), twice on the first
`--images` Fashion-MNIST test images at one budget: once with
`keras_hebb.robustness.autoattack` / `square`, once with
adversarial-robustness-toolbox's `AutoProjectedGradientDescent` and
`SquareAttack` on a `TensorFlowV2Classifier` wrapping the same model (ART
runs its TF2 estimator eagerly, one batch at a time). Each attack runs on
every image on its own (no cascade); APGD-T attacks, for each target rank
in turn, the images no earlier target broke (as AutoAttack does; ART's
targets are the wrong classes in label order, the project's the most
likely wrong classes: with 10 classes and 9 targets, the same set).

Prints, per implementation and attack: wall seconds, seconds per image and
the images broken (correct when clean, misclassified on the adversarial
example, which is checked inside the budget), then the union of the three.
"""

import argparse
import time

import numpy as np

from benchmarks import common

#: AutoAttack's standard strength.
APGD_STEPS = 100
APGD_CE_RESTARTS = 5
APGD_T_TARGETS = 9
SQUARE_QUERIES = 5000
SQUARE_P_INIT = 0.8


def _parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autoattack_vs_art",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, metavar="MODEL.keras")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--square-queries", type=int, default=SQUARE_QUERIES,
                        help=f"Square's queries (default: {SQUARE_QUERIES})")
    return parser


def _project_attacks(fn, x, y, norm, eps, args):
    """`{attack: adversarial examples}` and `{attack: seconds}` of the project's."""
    from keras_hebb.robustness import autoattack, square

    runs = {
        "apgd_ce": lambda: autoattack.apgd(
            fn, x, y, eps, norm, APGD_STEPS, loss="ce", restarts=APGD_CE_RESTARTS,
            seed=args.seed, batch_size=args.batch_size)[0],
        "apgd_t": lambda: autoattack.apgd_targeted(
            fn, x, y, eps, norm, APGD_STEPS, target_classes=APGD_T_TARGETS, restarts=1,
            seed=args.seed, batch_size=args.batch_size)[0],
        "square": lambda: square.square(
            fn, x, y, eps, norm, args.square_queries, p_init=SQUARE_P_INIT, seed=args.seed,
            batch_size=args.batch_size)[0],
    }
    return _timed(runs)


def _art_attacks(model, x, y, norm, eps, args):
    """The same three attacks with ART 1.20.1."""
    import keras
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    classes = int(model.output_shape[-1])
    classifier = TensorFlowV2Classifier(
        model, nb_classes=classes, input_shape=tuple(x.shape[1:]), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    art_norm = np.inf if norm == "linf" else 2
    np.random.seed(args.seed)  # ART draws its random starts from numpy's global generator

    def apgd(targeted, restarts, loss_type):
        return AutoProjectedGradientDescent(
            classifier, norm=art_norm, eps=eps, eps_step=2 * eps, max_iter=APGD_STEPS,
            targeted=targeted, nb_random_init=restarts, batch_size=args.batch_size,
            loss_type=loss_type, verbose=False)

    def apgd_t():
        attack = apgd(True, 1, "difference_logits_ratio")
        out = x.copy()
        standing = np.ones(len(x), bool)
        for rank in range(min(APGD_T_TARGETS, classes - 1)):
            idx = np.flatnonzero(standing)
            if not len(idx):
                break
            # The rank-th wrong class in label order (ART's AutoAttack).
            wrong = np.array([[c for c in range(classes) if c != label] for label in y[idx]])
            found = attack.generate(x[idx], y=wrong[:, rank])
            broken = np.argmax(classifier.predict(found), axis=1) != y[idx]
            out[idx[broken]] = found[broken]
            standing[idx[broken]] = False
        return out

    runs = {
        "apgd_ce": lambda: apgd(False, APGD_CE_RESTARTS, "cross_entropy").generate(x, y=y),
        "apgd_t": apgd_t,
        "square": lambda: SquareAttack(
            classifier, norm=art_norm, max_iter=args.square_queries, eps=eps,
            p_init=SQUARE_P_INIT, nb_restarts=1, batch_size=args.batch_size,
            verbose=False).generate(x, y=y),
    }
    return _timed(runs)


def _timed(runs):
    found, seconds = {}, {}
    for name, run in runs.items():
        started = time.perf_counter()
        found[name] = np.asarray(run(), np.float32)
        seconds[name] = time.perf_counter() - started
    return found, seconds


def main(argv=None):
    args = _parser().parse_args(argv)
    machine = common.machine_description()
    common.set_onednn(True)
    import keras

    import keras_hebb  # noqa: F401  (registers the custom layers)
    from keras_hebb import data
    from keras_hebb.robustness import attacks

    common.print_header(machine, "benchmarks.autoattack_vs_art", argv, "oneDNN on")
    model = keras.saving.load_model(args.model)
    x, y = data.load_arrays(args.dataset, "test", args.images)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    fn = attacks.make_model_fn(model)
    clean = attacks.predict(fn, x) == y
    print(f"{len(x)} images, {int(clean.sum())} correct when clean; {args.norm} eps "
          f"{args.eps:g}; APGD-CE {APGD_STEPS} steps x {APGD_CE_RESTARTS} restarts, APGD-T "
          f"{APGD_STEPS} steps x {APGD_T_TARGETS} targets, Square {args.square_queries} "
          f"queries (p_init {SQUARE_P_INIT})\n")
    rows = []
    for label, run in (("keras_hebb", lambda: _project_attacks(fn, x, y, args.norm,
                                                              args.eps, args)),
                       ("ART 1.20.1", lambda: _art_attacks(model, x, y, args.norm,
                                                           args.eps, args))):
        found, seconds = run()
        union = np.zeros(len(x), bool)
        for name, adversarial in found.items():
            attacks.check_budget(x, adversarial, args.norm, args.eps)
            broken = clean & (attacks.predict(fn, adversarial) != y)
            union |= broken
            rows.append((label, name, seconds[name], int(broken.sum())))
        rows.append((label, "union", sum(seconds.values()), int(union.sum())))
        print(f"{label} done", flush=True)
    print()
    print("| implementation | attack | seconds | seconds per image | images broken | "
          "robust accuracy |")
    print("|---|---|---|---|---|---|")
    for label, name, seconds, broken in rows:
        print(f"| {label} | {name} | {seconds:.1f} | {seconds / len(x):.3f} | "
              f"{broken} of {int(clean.sum())} | "
              f"{100 * (clean.sum() - broken) / len(x):.1f}% |")
    ours = {n: s for lab, n, s, _ in rows if lab == "keras_hebb"}
    art = {n: s for lab, n, s, _ in rows if lab != "keras_hebb"}
    print("\nART time / keras_hebb time: " + ", ".join(
        f"{n} {art[n] / max(ours[n], 1e-9):.1f}x" for n in ours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
