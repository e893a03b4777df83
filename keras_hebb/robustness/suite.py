"""The attack suite: per-image worst case over every attack, sanity checks.

How a budget is evaluated (AutoAttack-style cascade):

1. an image counts as robust at budget `eps` only if it is classified
   correctly when clean and no attack of the suite found an adversarial
   example for it within `eps`;
2. budgets of one norm run in increasing order, and an image broken at a
   smaller budget stays broken at the larger ones (the adversarial example
   is inside the larger ball too);
3. each attack runs only on the images still standing, in cascade order
   (`registry.KINDS`): plain gradient attacks, the AutoAttack gradient
   attacks (APGD-CE, APGD-T), BPDA, then the black-box ones (Square,
   transfer, SPSA).

Every reported column is its own cascade over its own set of attacks
(`COLUMNS`): rule 2 carries over only the images broken by that column's
attacks. `gradient_only` is thus exactly the worst case over the plain
gradient attacks (an image BPDA broke at a smaller budget is not carried
into it); the chain `gradient_only >= plain_gradients >= white_box >=
worst_case` shows what APGD, BPDA and the black-box attacks each add, and
`paper_protocol` (APGD-CE + APGD-T) is the paper's evaluation. An attack
runs once per budget on the union of the standing images of the columns
it belongs to, and its breaks count in all of them.

Whether an image is broken is always decided by the true model's forward
pass on the projected, clipped adversarial example, never by the attack.

The sanity checks that flag gradient masking (gradients, large budget,
more steps, BPDA and black-box gaps) are in `checks`.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from keras_hebb.robustness import attacks, bpda, checks, noise
from keras_hebb.robustness.cascade import (  # noqa: F401  (part of this module's API)
    AUTOATTACK,
    COLUMNS,
    PAPER_PROTOCOL,
    evaluate_norm,
)
from keras_hebb.robustness.registry import ATTACK_NAMES, ATTACKS, REGISTRY  # noqa: F401


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """What the suite runs. `QUICK` and `FULL` are the presets.

    Attributes:
        name: preset name, reported.
        linf_budgets, l2_budgets: budgets in [0, 1] pixel space.
        noise_sigmas, noise_draws: Gaussian noise levels and draws per level.
        attacks: names from `ATTACK_NAMES`, run in cascade order.
        steps: PGD / BPDA iterations.
        restarts: random-start runs of `pgd_ce`, `pgd_margin` and `bpda`.
        mim_steps: momentum iterative method iterations.
        transfer_steps: PGD iterations on the source model.
        bpda_modes: surrogate modes (`bpda.MODES`), one BPDA stage each.
        cw_steps, cw_binary_steps, cw_images: CW-L2 iterations, binary
            search steps, and at most how many images it attacks (the
            first robust ones at the smallest L2 budget).
        spsa_steps, spsa_samples, spsa_images: SPSA iterations, probes per
            iteration, and at most how many robust images it attacks at
            each Linf budget.
        apgd_steps, apgd_restarts: iterations and restarts of `apgd_ce` and
            of `apgd_t` (per target class).
        apgd_targets: target classes of `apgd_t` (the most likely wrong
            ones; AutoAttack's standard version uses 9).
        square_queries, square_p_init: Square's iterations (one forward pass
            each) and initial square area (fraction of the image).
        check_images: images used by the standalone sanity checks.
        check_steps: (fewer, more) PGD steps of the `more_steps` check.
        batch_size: images per attack batch.
    """

    name: str
    linf_budgets: tuple = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    l2_budgets: tuple = (0.25, 0.5, 1.0, 2.0, 3.0)
    noise_sigmas: tuple = (0.05, 0.1, 0.2, 0.3, 0.5)
    noise_draws: int = 3
    attacks: tuple = ATTACK_NAMES
    steps: int = 10
    restarts: int = 1
    mim_steps: int = 10
    transfer_steps: int = 10
    bpda_modes: tuple = ("smooth",)
    cw_steps: int = 50
    cw_binary_steps: int = 4
    cw_images: int = 200
    spsa_steps: int = 10
    spsa_samples: int = 64
    spsa_images: int = 4
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 9
    square_queries: int = 1000
    square_p_init: float = 0.8
    check_images: int = 100
    check_steps: tuple = (5, 20)
    batch_size: int = 256

    def __post_init__(self):
        unknown = [a for a in self.attacks if a not in REGISTRY]
        if unknown:
            raise ValueError(
                f"Unknown attack {unknown[0]!r}: expected some of {list(REGISTRY)}."
            )
        for label, values in (("linf budget", self.linf_budgets),
                              ("l2 budget", self.l2_budgets),
                              ("noise sigma", self.noise_sigmas)):
            bad = [v for v in values if not (np.isfinite(v) and v >= 0)]
            if bad:
                raise ValueError(
                    f"Invalid {label} {bad[0]!r}: expected numbers >= 0."
                )
        for field in ("steps", "restarts", "apgd_steps", "apgd_restarts", "apgd_targets",
                      "square_queries"):
            if int(getattr(self, field)) < 1:
                raise ValueError(
                    f"Invalid `{field}`: expected an integer >= 1. "
                    f"Received: {field}={getattr(self, field)!r}"
                )
        if not 0 < self.square_p_init <= 1:
            raise ValueError(
                f"Invalid `square_p_init`: expected a fraction in (0, 1]. "
                f"Received: square_p_init={self.square_p_init!r}"
            )
        if any(m not in bpda.MODES for m in self.bpda_modes):
            raise ValueError(
                f"Invalid `bpda_modes`: expected some of {list(bpda.MODES)}. "
                f"Received: {list(self.bpda_modes)}"
            )

    def settings(self):
        return dataclasses.asdict(self)


#: A few minutes for a small model on 500 images on 2 CPU cores; APGD-CE
#: and APGD-T (1 target) capped at 10 steps, no Square. (Without PGD-CE,
#: APGD-CE in its place, the worst case of a HaH model rose by up to 1.6
#: points at some budgets: measured, so PGD-CE stays.)
QUICK = SuiteConfig(
    name="quick",
    noise_draws=2,
    attacks=("fgsm", "pgd_ce", "pgd_margin", "apgd_ce", "apgd_t", "bpda", "transfer", "spsa"),
    steps=10, restarts=1, transfer_steps=5, bpda_modes=("smooth",),
    spsa_steps=10, spsa_samples=64, spsa_images=4,
    apgd_steps=10, apgd_restarts=1, apgd_targets=1,
    check_images=100, check_steps=(5, 20),
)

#: The one the results are reported with: more steps and restarts, MIM,
#: CW-L2, both BPDA surrogates, APGD-CE, APGD-T (3 targets), Square, SPSA
#: on a subset.
FULL = SuiteConfig(
    name="full",
    noise_draws=3,
    attacks=ATTACK_NAMES,
    steps=20, restarts=2, mim_steps=20, transfer_steps=10,
    bpda_modes=("smooth", "identity"),
    cw_steps=50, cw_binary_steps=4, cw_images=400,
    spsa_steps=20, spsa_samples=128, spsa_images=8,
    apgd_steps=50, apgd_restarts=1, apgd_targets=3, square_queries=500,
    check_images=200, check_steps=(10, 40),
)

PRESETS = {"quick": QUICK, "full": FULL}

class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled

    def bar(self, target, title):
        if not self.enabled:
            return None
        import keras

        print(title, flush=True)
        return keras.utils.Progbar(target, stateful_metrics=["robust"])


class _ModelUnderTest:
    def __init__(self, name, model):
        self.name = name
        self.model = model
        self.fn = attacks.make_model_fn(model)
        shape = tuple(model.input_shape[1:])
        self.surrogates = bpda.has_surrogates(model, shape)
        self.bpda_fns = {}
        self.num_classes = int(model.output_shape[-1])

    def bpda_fn(self, mode):
        if mode not in self.bpda_fns:
            self.bpda_fns[mode] = attacks.make_model_fn(self.model, surrogate=mode)
        return self.bpda_fns[mode]


def run_suite(models, images, labels, config=QUICK, seed=0, transfer_sources=None,
              progress=True, evaluate=None):
    """Evaluates models side by side on the same images and noise draws.

    Args:
        models: dict name -> Keras model (images in [0, 1] -> logits).
        images, labels: float32 images in [0, 1] (NHWC) and int labels.
        config: a `SuiteConfig` (`QUICK`, `FULL` or your own).
        seed: seeds the noise draws and the attacks' random starts.
        transfer_sources: dict target name -> list of source names (keys
            of `models`); `None` uses every other evaluated model.
        progress: show progress bars. Defaults to `True`.
        evaluate: names of the models to evaluate; the others only serve
            as transfer sources. `None` evaluates all.

    Returns:
        A JSON-ready dict: settings, and per model clean accuracy, noise
        accuracy, per-budget robust accuracy with every stage, the
        smallest breaking budget of each image, sanity checks, timing.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if images.min(initial=0.0) < 0 or images.max(initial=0.0) > 1:
        raise ValueError("Images must be in [0, 1].")
    under_test = {name: _ModelUnderTest(name, model) for name, model in models.items()}
    evaluate = list(models) if evaluate is None else list(evaluate)
    if transfer_sources is None:
        transfer_sources = {n: [m for m in evaluate if m != n] for n in evaluate}
    progress = _Progress(progress)
    transfer_cache = {}
    results = {
        "settings": {**config.settings(), "seed": int(seed), "images": int(len(images)),
                     "check_margin": checks.CHECK_MARGIN},
        "models": {},
    }
    for name in evaluate:
        sources = [under_test[s] for s in transfer_sources.get(name, [])]
        results["models"][name] = _evaluate_model(under_test[name], sources, images, labels,
                                                  config, seed, transfer_cache, progress)
    return results


def _evaluate_model(target, sources, images, labels, config, seed, transfer_cache,
                    progress):
    """One model's entry: clean and noise accuracy, both norms' cascades,
    the sanity checks and timing."""
    started = time.perf_counter()
    predicted = attacks.predict(target.fn, images)
    clean_correct = predicted == labels
    noise_started = time.perf_counter()
    noise_accuracy = noise.noise_accuracy(target.fn, images, labels, config.noise_sigmas,
                                          config.noise_draws, seed)
    entry = {
        "clean_accuracy": float(clean_correct.mean()),
        "surrogate_gradients": target.surrogates,
        "transfer_sources": [s.name for s in sources],
        "noise": noise_accuracy,
        "timing": {"noise": round(time.perf_counter() - noise_started, 3)},
        "attacks": {},
        "smallest_breaking_budget": {},
    }
    for norm, budgets in (("linf", config.linf_budgets), ("l2", config.l2_budgets)):
        if not budgets:
            continue
        tf.random.set_seed(seed)
        records, smallest = evaluate_norm(
            target, sources, images, labels, clean_correct, norm, budgets, config,
            transfer_cache, progress, seed=seed)
        entry["attacks"][norm] = records
        # 0 = misclassified clean, null = never broken.
        entry["smallest_breaking_budget"][norm] = [
            None if np.isnan(v) else float(v) for v in smallest
        ]
    all_records = [r for norm in entry["attacks"].values() for r in norm]
    smallest_linf = entry["smallest_breaking_budget"].get("linf")
    checks_started = time.perf_counter()
    entry["checks"] = checks.sanity_checks(
        target, images, labels, all_records, config, seed,
        None if smallest_linf is None else
        np.array([np.nan if v is None else v for v in smallest_linf], np.float64))
    entry["timing"]["checks"] = round(time.perf_counter() - checks_started, 3)
    entry["checks_passed"] = all(c["passed"] for c in entry["checks"].values())
    seconds = time.perf_counter() - started
    entry["seconds"] = round(seconds, 2)
    entry["seconds_per_image"] = round(seconds / max(len(images), 1), 4)
    return entry
