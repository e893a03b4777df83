"""The attack suite: per-image worst case over every attack, sanity checks.

How a budget is evaluated (AutoAttack-style cascade):

1. an image counts as robust at budget `eps` only if it is classified
   correctly when clean and no attack of the suite found an adversarial
   example for it within `eps`;
2. budgets of one norm run in increasing order, and an image broken at a
   smaller budget stays broken at the larger ones (the adversarial example
   is inside the larger ball too);
3. each attack runs only on the images still robust, in the order of
   `ATTACKS`: plain gradient attacks first, then the adaptive BPDA attack,
   then the black-box ones (transfer, SPSA). The accuracy after each
   stage is recorded, so the report shows what every stage added.

Whether an image is broken is always decided by the true model's forward
pass on the projected, clipped adversarial example, never by the attack.

Sanity checks (Athalye et al. 2018; Carlini et al. 2019), each pass/fail:
- `gradients`: input gradients (margin loss) are finite and not zero;
- `large_budget`: Linf PGD at eps 0.5 (enough to turn any image into
  uniform gray) brings accuracy to about 0;
- `more_steps`: more PGD steps never raise accuracy;
- `bpda_adds_little`: the adaptive BPDA attack breaks few images that plain
  gradient attacks could not (if it breaks many, plain gradients are
  masked and the robust numbers rest on BPDA);
- `black_box_not_stronger`: transfer and SPSA break few images that the
  white-box attacks could not.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from keras_hebb.robustness import attacks, bpda, noise, registry
from keras_hebb.robustness.registry import ATTACK_NAMES, ATTACKS, REGISTRY  # noqa: F401

_REPORTED_KIND = {"gradient": "gradient", "autoattack": "gradient", "bpda": "adaptive",
                  "black_box": "black_box"}

#: Margins of the pass/fail checks (fractions of the evaluated images).
CHECK_MARGIN = 0.03
ZERO_GRADIENT_LIMIT = 0.01
LARGE_BUDGET = 0.5
LARGE_BUDGET_LIMIT = 0.05


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
    check_images: int = 100
    check_steps: tuple = (5, 20)
    batch_size: int = 256

    def __post_init__(self):
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise ValueError(
                f"Unknown attack {unknown[0]!r}: expected some of {list(ATTACK_NAMES)}."
            )
        for label, values in (("linf budget", self.linf_budgets),
                              ("l2 budget", self.l2_budgets),
                              ("noise sigma", self.noise_sigmas)):
            bad = [v for v in values if not (np.isfinite(v) and v >= 0)]
            if bad:
                raise ValueError(
                    f"Invalid {label} {bad[0]!r}: expected numbers >= 0."
                )
        if any(m not in bpda.MODES for m in self.bpda_modes):
            raise ValueError(
                f"Invalid `bpda_modes`: expected some of {list(bpda.MODES)}. "
                f"Received: {list(self.bpda_modes)}"
            )

    def settings(self):
        return dataclasses.asdict(self)


#: A few minutes for a small model on 500 images on 2 CPU cores.
QUICK = SuiteConfig(
    name="quick",
    noise_draws=2,
    attacks=("fgsm", "pgd_ce", "pgd_margin", "bpda", "transfer", "spsa"),
    steps=10, restarts=1, transfer_steps=5, bpda_modes=("smooth",),
    spsa_steps=10, spsa_samples=64, spsa_images=4,
    check_images=100, check_steps=(5, 20),
)

#: The one the results are reported with: more steps and restarts, MIM,
#: CW-L2, both BPDA surrogates, SPSA on a subset.
FULL = SuiteConfig(
    name="full",
    noise_draws=3,
    attacks=ATTACK_NAMES,
    steps=20, restarts=2, mim_steps=20, transfer_steps=10,
    bpda_modes=("smooth", "identity"),
    cw_steps=50, cw_binary_steps=4, cw_images=200,
    spsa_steps=20, spsa_samples=128, spsa_images=4,
    check_images=200, check_steps=(10, 40),
)

PRESETS = {"quick": QUICK, "full": FULL}


def worst_case_correct(clean_correct, fooled_by_attack):
    """Per-image worst case: correct clean and fooled by no attack.

    Args:
        clean_correct: bool array `(N,)`.
        fooled_by_attack: mapping attack name -> bool array `(N,)`, True
            where that attack found an adversarial example within budget
            (False where it did not, or did not run).

    Returns:
        bool array `(N,)`: the images robust to the whole suite.
    """
    robust = np.asarray(clean_correct, bool).copy()
    for name, fooled in fooled_by_attack.items():
        fooled = np.asarray(fooled, bool)
        if fooled.shape != robust.shape:
            raise ValueError(
                f"Attack {name!r} gave {fooled.shape} outcomes for "
                f"{robust.shape} images."
            )
        robust &= ~fooled
    return robust


def carry_over_budgets(robust_by_budget):
    """Makes per-image robustness monotone in the budget of one norm.

    Args:
        robust_by_budget: mapping budget -> bool array `(N,)`.

    Returns:
        A dict budget -> bool array where an image robust at a budget is
        also robust at every smaller one (broken at eps means broken at
        every larger eps: the adversarial example is in the larger ball).
    """
    result = {}
    robust = None
    for eps in sorted(robust_by_budget):
        current = np.asarray(robust_by_budget[eps], bool)
        robust = current.copy() if robust is None else robust & current
        result[eps] = robust
    return result


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


def _evaluate_norm(target, sources, images, labels, clean_correct, norm, budgets,
                   config, transfer_cache, progress):
    robust = clean_correct.copy()
    first_broken = np.full(len(images), np.nan)
    records = []
    caches = {name: {} for name in REGISTRY}
    caches["transfer"] = transfer_cache
    stages = registry.stages(config, target, norm, sources)
    bar = progress.bar(len(budgets) * max(1, len(stages)),
                       f"[{target.name}] {norm} attacks, budgets {list(budgets)}")
    done = 0
    for eps in sorted(budgets):
        carried = int(np.sum(clean_correct & ~robust))
        record = {"norm": norm, "budget": float(eps), "carried_over": carried, "stages": []}
        kind_accuracy = {}
        for stage in stages:
            attack = REGISTRY[stage.attack]
            settings = stage.settings
            idx = np.flatnonzero(robust)
            if attack.select is not None:
                idx = attack.select(idx, config, caches[attack.name])
            started = time.perf_counter()
            fooled_count = 0
            if len(idx) and eps > 0:
                source = next((s for s in sources if s.name == settings.get("source")), None)
                per_image_bar = None
                if attack.name == "spsa" and progress.enabled:
                    per_image_bar = progress.bar(
                        len(idx), f"  {attack.name} eps={eps} on {len(idx)} images")
                tick = (lambda: per_image_bar.add(1)) if per_image_bar is not None else None
                adversarial = attack.craft(registry.StageInput(
                    target=target, source=source, images=images[idx], labels=labels[idx],
                    idx=idx, norm=norm, eps=eps, config=config, settings=settings,
                    cache=caches[attack.name], progress=tick))
                attacks.check_budget(images[idx], adversarial, norm, eps)
                fooled = attacks.predict(target.fn, adversarial) != labels[idx]
                robust[idx[fooled]] = False
                first_broken[idx[fooled]] = eps
                fooled_count = int(fooled.sum())
            record["stages"].append({
                "stage": stage.name,
                "attack": attack.name,
                "kind": _REPORTED_KIND[attack.kind],
                **settings,
                "attacked": int(len(idx)),
                "fooled": fooled_count,
                "accuracy_after": float(robust.mean()),
                "seconds": round(time.perf_counter() - started, 3),
            })
            kind_accuracy[_REPORTED_KIND[attack.kind]] = float(robust.mean())
            done += 1
            if bar is not None:
                bar.update(done, values=[("robust", float(robust.mean()))])
        record["robust_accuracy"] = float(robust.mean())
        # Accuracy after each kind of stage (cumulative, in cascade order).
        last = float(clean_correct.mean()) - carried / len(images)
        for kind in ("gradient", "adaptive", "black_box"):
            last = kind_accuracy.get(kind, last)
            record[f"accuracy_after_{kind}"] = last
        records.append(record)
    smallest = np.where(clean_correct, first_broken, 0.0)
    return records, smallest


def _check_gradients(targets, images, labels, config):
    details = {}
    passed = True
    for label, fn in targets:
        grads = attacks.input_gradients(fn, images, labels, loss="margin",
                                        batch_size=config.batch_size)
        flat = grads.reshape(len(grads), -1)
        finite = bool(np.all(np.isfinite(flat)))
        zero = float(np.mean(np.all(flat == 0, axis=1))) if len(flat) else 0.0
        ok = finite and zero <= ZERO_GRADIENT_LIMIT
        details[label] = {"finite": finite, "zero_gradient_fraction": zero,
                          "mean_abs_gradient": float(np.mean(np.abs(flat))) if finite else None,
                          "passed": ok}
        passed &= ok
    return {"passed": bool(passed), "limit_zero_fraction": ZERO_GRADIENT_LIMIT,
            "details": details,
            "meaning": "input gradients of the margin loss are finite and non-zero"}


def _sanity_checks(target, images, labels, records, config, seed):
    n = min(config.check_images, len(images))
    x, y = images[:n], labels[:n]
    checks = {}
    fns = [("plain", target.fn)]
    if target.surrogates and "bpda" in config.attacks:
        fns += [(f"bpda_{m}", target.bpda_fn(m)) for m in config.bpda_modes]
    checks["gradients"] = _check_gradients(fns, x, y, config)

    tf.random.set_seed(seed)
    correct = attacks.predict(target.fn, x) == y
    for _, fn in fns:
        adversarial = attacks.pgd(fn, x, y, LARGE_BUDGET, "linf", config.steps,
                                  loss="margin", batch_size=config.batch_size)
        correct &= attacks.predict(target.fn, adversarial) == y
    large = float(correct.mean()) if n else 0.0
    checks["large_budget"] = {
        "passed": large <= LARGE_BUDGET_LIMIT, "norm": "linf", "budget": LARGE_BUDGET,
        "accuracy": large, "limit": LARGE_BUDGET_LIMIT, "images": n,
        "attacks": [f"pgd_margin ({label})" for label, _ in fns], "steps": config.steps,
        "meaning": "accuracy falls to about 0 at a large budget",
    }

    linf = sorted(config.linf_budgets)
    eps = linf[len(linf) // 2] if linf else 0.1
    few, many = config.check_steps
    accuracy = {}
    for steps in (few, many):
        tf.random.set_seed(seed)
        adversarial = attacks.pgd(target.fn, x, y, eps, "linf", steps, loss="margin",
                                  batch_size=config.batch_size)
        accuracy[steps] = float(np.mean(attacks.predict(target.fn, adversarial) == y))
    tolerance = max(CHECK_MARGIN, 1.0 / max(n, 1))
    checks["more_steps"] = {
        "passed": accuracy[many] <= accuracy[few] + tolerance, "norm": "linf",
        "budget": eps, "attack": "pgd_margin", "steps": [few, many],
        "accuracy": [accuracy[few], accuracy[many]], "tolerance": tolerance, "images": n,
        "meaning": "more PGD steps never raise accuracy",
    }

    def gap(first_kind, second_kind):
        worst = 0.0
        where = None
        for record in records:
            diff = record[f"accuracy_after_{first_kind}"] - record[f"accuracy_after_{second_kind}"]
            if diff > worst:
                worst, where = diff, (record["norm"], record["budget"])
        return worst, where

    adaptive_gap, where = gap("gradient", "adaptive")
    ran_bpda = any(s["kind"] == "adaptive" and s["attacked"] for r in records for s in r["stages"])
    checks["bpda_adds_little"] = {
        "passed": adaptive_gap <= CHECK_MARGIN, "ran": ran_bpda,
        "largest_gap": adaptive_gap, "at": where, "margin": CHECK_MARGIN,
        "meaning": "BPDA (surrogate gradients) breaks few images that plain "
                   "gradient attacks could not; a failure means the plain "
                   "gradients are masked",
    }
    black_gap, where = gap("adaptive", "black_box")
    spsa_rates = [
        (s["fooled"], s["attacked"]) for r in records for s in r["stages"]
        if s["attack"] == "spsa" and s["attacked"]
    ]
    fooled = sum(f for f, _ in spsa_rates)
    attacked = sum(a for _, a in spsa_rates)
    spsa_rate = fooled / attacked if attacked else 0.0
    spsa_ok = attacked < 4 or spsa_rate <= 0.25
    checks["black_box_not_stronger"] = {
        "passed": black_gap <= CHECK_MARGIN and spsa_ok,
        "largest_gap": black_gap, "at": where, "margin": CHECK_MARGIN,
        "spsa_fooled": fooled, "spsa_attacked": attacked, "spsa_rate_limit": 0.25,
        "meaning": "transfer and SPSA break few images that white-box attacks could not",
    }
    return checks


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
                     "check_margin": CHECK_MARGIN},
        "models": {},
    }
    for name in evaluate:
        target = under_test[name]
        started = time.perf_counter()
        sources = [under_test[s] for s in transfer_sources.get(name, [])]
        predicted = attacks.predict(target.fn, images)
        clean_correct = predicted == labels
        entry = {
            "clean_accuracy": float(clean_correct.mean()),
            "surrogate_gradients": target.surrogates,
            "transfer_sources": [s.name for s in sources],
            "noise": noise.noise_accuracy(target.fn, images, labels, config.noise_sigmas,
                                          config.noise_draws, seed),
            "attacks": {},
            "smallest_breaking_budget": {},
        }
        for norm, budgets in (("linf", config.linf_budgets), ("l2", config.l2_budgets)):
            if not budgets:
                continue
            tf.random.set_seed(seed)
            records, smallest = _evaluate_norm(
                target, sources, images, labels, clean_correct, norm, budgets, config,
                transfer_cache, progress)
            entry["attacks"][norm] = records
            # 0 = misclassified clean, null = never broken.
            entry["smallest_breaking_budget"][norm] = [
                None if np.isnan(v) else float(v) for v in smallest
            ]
        all_records = [r for norm in entry["attacks"].values() for r in norm]
        entry["checks"] = _sanity_checks(target, images, labels, all_records, config, seed)
        entry["checks_passed"] = all(c["passed"] for c in entry["checks"].values())
        seconds = time.perf_counter() - started
        entry["seconds"] = round(seconds, 2)
        entry["seconds_per_image"] = round(seconds / max(len(images), 1), 4)
        results["models"][name] = entry
    return results
