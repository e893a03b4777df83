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

from keras_hebb.robustness import attacks, bpda, checks, escalation, noise, registry, resume
from keras_hebb.robustness.cascade import (  # noqa: F401  (part of this module's API)
    COLUMNS,
    evaluate_norm,
)
from keras_hebb.robustness.registry import (  # noqa: F401
    ATTACK_NAMES,
    ATTACKS,
    REGISTRY,
    attack_names,
)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """What the suite runs. `QUICK` and `FULL` are the presets.

    Attributes:
        name: preset name, reported; each attack's defaults are its
            settings for this preset (`registry.Attack.presets`).
        linf_budgets, l2_budgets: budgets in [0, 1] pixel space.
        noise_sigmas, noise_draws: Gaussian noise levels and draws per level.
        attacks: registry names (`registry.attack_names()`), run in cascade
            order.
        attack_settings: attack name -> the settings that differ from its
            defaults for this preset (steps, restarts, queries, ...: see
            each `registry.REGISTRY[name].defaults`). Filled in: after
            construction it holds every setting of every attack in
            `attacks` (and only those).
        check_images: images used by the standalone sanity checks.
        check_steps: (fewer, more) PGD steps of the `more_steps` check.
        large_budget_steps: PGD steps of the `large_budget` checks.
        batch_size: images per attack batch.
        escalate: attack again at AutoAttack's strength (Square at 5,000
            queries) a model that shows a sign of gradient masking, and
            check what that adds (`escalation`, the check
            `strong_attacks_add_little`). On in `FULL`.
    """

    name: str
    linf_budgets: tuple = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    l2_budgets: tuple = (0.25, 0.5, 1.0, 2.0, 3.0)
    noise_sigmas: tuple = (0.05, 0.1, 0.2, 0.3, 0.5)
    noise_draws: int = 3
    attacks: tuple = ATTACK_NAMES
    attack_settings: dict = dataclasses.field(default_factory=dict)
    check_images: int = 100
    check_steps: tuple = (5, 20)
    large_budget_steps: int = 10
    batch_size: int = 256
    escalate: bool = False

    def __post_init__(self):
        names = tuple(self.attacks)
        unknown = [a for a in names if a not in REGISTRY]
        if unknown:
            raise ValueError(f"Unknown attack: expected some of {list(attack_names())}. "
                             f"Received: {unknown[0]!r}")
        given = dict(self.attack_settings or {})
        stray = [a for a in given if a not in REGISTRY]
        if stray:
            raise ValueError(f"Settings for an unknown attack: expected some of "
                             f"{list(attack_names())}. Received: {stray[0]!r}")
        resolved = {}
        for name in names:
            attack = REGISTRY[name]
            defaults = attack.settings_for(self.name)
            extra = sorted(set(given.get(name, {})) - set(defaults))
            if extra:
                raise ValueError(f"Unknown setting of attack {name!r}: expected some of "
                                 f"{sorted(defaults)}. Received: {extra[0]!r}")
            resolved[name] = {**defaults, **given.get(name, {})}
            if attack.check is not None:
                attack.check(resolved[name])
        object.__setattr__(self, "attacks", names)
        object.__setattr__(self, "attack_settings", resolved)
        for label, values in (("linf budget", self.linf_budgets),
                              ("l2 budget", self.l2_budgets),
                              ("noise sigma", self.noise_sigmas)):
            bad = [v for v in values if not (np.isfinite(v) and v >= 0)]
            if bad:
                raise ValueError(f"Invalid {label}: expected numbers >= 0. "
                                 f"Received: {bad[0]!r}")
        for field in ("check_images", "large_budget_steps", "batch_size"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"Invalid `{field}`: expected an integer >= 1. "
                                 f"Received: {field}={getattr(self, field)!r}")

    def with_settings(self, **attack_settings):
        """A copy with some attacks' settings changed, e.g.
        `FULL.with_settings(apgd_ce={"restarts": 5})`."""
        merged = {n: {**v, **attack_settings.get(n, {})}
                  for n, v in self.attack_settings.items()}
        stray = [n for n in attack_settings if n not in merged]
        if stray:
            raise ValueError(f"Settings for an attack the suite does not run: expected "
                             f"some of {list(self.attacks)}. Received: {stray[0]!r}")
        return dataclasses.replace(self, attack_settings=merged)

    def settings(self):
        return dataclasses.asdict(self)


#: A few minutes for a small model on 500 images on 2 CPU cores; APGD-CE
#: and APGD-T (1 target) capped at 10 steps, a cheap Square (100 queries)
#: so the black-box check can fail. (Without PGD-CE, APGD-CE in its
#: place, the worst case of a HaH model rose by up to 1.6 points at some
#: budgets: measured, so PGD-CE stays.)
QUICK = SuiteConfig(
    name="quick",
    noise_draws=2,
    attacks=("fgsm", "pgd_ce", "pgd_margin", "apgd_ce", "apgd_t", "bpda", "square",
             "transfer", "spsa"),
    check_images=100, check_steps=(5, 20), large_budget_steps=10,
)

#: The one the results are reported with: more steps and restarts, MIM,
#: CW-L2, both BPDA surrogates, APGD-CE, APGD-T (3 targets), Square, SPSA
#: on a subset (each attack's `presets["full"]`); a model that shows a
#: sign of gradient masking is attacked again with Square at 5,000
#: queries (`escalation`).
FULL = SuiteConfig(
    name="full",
    noise_draws=3,
    attacks=ATTACK_NAMES,
    check_images=200, check_steps=(10, 40), large_budget_steps=20,
    escalate=True,
)

PRESETS = {"quick": QUICK, "full": FULL}

#: AutoAttack at its standard strength (Croce & Hein 2020): APGD-CE 100
#: steps x 5 restarts, APGD-T 100 steps x 9 target classes, Square 5,000
#: queries (each attack's `presets["autoattack_standard"]`).
AUTOATTACK_STANDARD = "autoattack_standard"


def with_autoattack_standard(config):
    """`config` with APGD-CE, APGD-T and Square added (if missing) and set
    to AutoAttack's standard strength; its other attacks unchanged. No
    escalation: its Square already runs at the escalated strength."""
    names = tuple(config.attacks) + tuple(
        n for n in ("apgd_ce", "apgd_t", "square") if n not in config.attacks)
    standard = {n: REGISTRY[n].settings_for(AUTOATTACK_STANDARD)
                for n in ("apgd_ce", "apgd_t", "square")}
    return dataclasses.replace(config, attacks=registry.cascade_order(names),
                               attack_settings={**config.attack_settings, **standard},
                               escalate=False)


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
        self.has_threshold = _has_threshold(model)
        self.bpda_fns = {}
        self.num_classes = int(model.output_shape[-1])

    def bpda_fn(self, mode):
        if mode not in self.bpda_fns:
            self.bpda_fns[mode] = attacks.make_model_fn(self.model, surrogate=mode)
        return self.bpda_fns[mode]


def _has_threshold(model):
    """Whether `model` keeps only its strongest activations (a top-k or
    adaptive threshold, inside a `HaHBlock` or on its own): the layers
    whose hard masks can hide gradients."""
    from keras_hebb import _compat
    from keras_hebb.layers import AdaptiveThreshold, FractionalThreshold

    return any(isinstance(layer, (FractionalThreshold, AdaptiveThreshold))
               for layer in _compat.all_layers(model))


def _escalate(target, images, labels, clean_correct, config, seed, records_by_norm,
              smallest_by_norm, progress, resume_dir, key):
    """The escalation rule (`escalation`) on one model: its signs of
    masking and, if any, both norms attacked again (records and smallest
    budgets updated in place). Returns what the report keeps of it, and
    the seconds of escalated norms read back from `resume_dir`."""
    started = time.perf_counter()
    earlier = 0.0  # seconds of escalated norms read back from an earlier run
    all_records = [r for records in records_by_norm.values() for r in records]
    signs = escalation.masking_signs(target, all_records, images, labels, config)
    if signs:
        budgets = {"linf": config.linf_budgets, "l2": config.l2_budgets}
        for norm, records in records_by_norm.items():
            if progress.enabled:
                print(f"[{target.name}] signs of masking ({', '.join(signs)}): {norm} "
                      f"again with Square at {escalation.ESCALATED_SQUARE_QUERIES} queries",
                      flush=True)
            records_by_norm[norm], smallest_by_norm[norm], seconds = escalation.escalate(
                target, images, labels, clean_correct, norm, budgets[norm], config,
                records, smallest_by_norm[norm], progress, seed, resume_dir, key)
            earlier += seconds
    return {"signs": signs, "ran": bool(signs),
            "attacks": {"square": {"queries": escalation.ESCALATED_SQUARE_QUERIES}},
            "seed_offset": escalation.ESCALATION_SEED_OFFSET,
            "seconds": round(time.perf_counter() - started + earlier, 3)}, earlier


def run_suite(models, images, labels, config=QUICK, seed=0, transfer_sources=None,
              progress=True, evaluate=None, resume_dir=None):
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
        resume_dir: a folder where each model's finished norms are saved
            (`resume`); a later call with the same models, images,
            settings and seed reads them back instead of attacking again,
            so an interrupted evaluation continues where it stopped. The
            caller removes it (`resume.clear`) once the results are kept.
            `None` (the default) saves nothing.

    Returns:
        A JSON-ready dict: settings, and per model clean accuracy, noise
        accuracy, per-budget robust accuracy with every stage, the
        smallest breaking budget of each image, sanity checks, timing.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if images.min(initial=0.0) < 0 or images.max(initial=0.0) > 1:
        raise ValueError("Invalid images: expected pixels in [0, 1]. Received: "
                         f"min={images.min():g}, max={images.max():g}")
    under_test = {name: _ModelUnderTest(name, model) for name, model in models.items()}
    evaluate = list(models) if evaluate is None else list(evaluate)
    if transfer_sources is None:
        transfer_sources = {n: [m for m in evaluate if m != n] for n in evaluate}
    progress = _Progress(progress)
    shared_caches = {}
    results = {
        "settings": {**config.settings(), "seed": int(seed), "images": int(len(images)),
                     "check_margin": checks.CHECK_MARGIN},
        "models": {},
    }
    for name in evaluate:
        sources = [under_test[s] for s in transfer_sources.get(name, [])]
        results["models"][name] = _evaluate_model(under_test[name], sources, images, labels,
                                                  config, seed, shared_caches, progress,
                                                  resume_dir)
    return results


def _norm_cascade(target, sources, images, labels, clean_correct, norm, budgets, config,
                  seed, shared_caches, progress, resume_dir, key):
    """One norm's cascades, or their results saved by an earlier run:
    `(records, smallest, seconds the saved results took, else 0)`."""
    saved = resume.load(resume_dir, target.name, norm, key)
    if saved is not None:
        if progress.enabled:
            print(f"[{target.name}] {norm} attacks: finished in an earlier run, "
                  f"read from {resume_dir}", flush=True)
        return saved
    norm_started = time.perf_counter()
    with attacks.global_seed(seed):
        records, smallest = evaluate_norm(
            target, sources, images, labels, clean_correct, norm, budgets, config,
            shared_caches, progress, seed=seed)
    resume.save(resume_dir, target.name, norm, key, records, smallest,
                time.perf_counter() - norm_started)
    return records, smallest, 0.0


def _evaluate_model(target, sources, images, labels, config, seed, shared_caches,
                    progress, resume_dir=None):
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
    key = resume.fingerprint(target, sources, images, labels, config.settings(), seed) \
        if resume_dir else None
    earlier = 0.0  # seconds the norms read back took in their own run
    smallest_by_norm = {}
    for norm, budgets in (("linf", config.linf_budgets), ("l2", config.l2_budgets)):
        if not budgets:
            continue
        records, smallest, seconds = _norm_cascade(
            target, sources, images, labels, clean_correct, norm, budgets, config, seed,
            shared_caches, progress, resume_dir, key)
        earlier += seconds
        entry["attacks"][norm] = records
        smallest_by_norm[norm] = np.asarray(smallest, np.float64)
    if config.escalate:
        entry["escalation"], read_back = _escalate(
            target, images, labels, clean_correct, config, seed, entry["attacks"],
            smallest_by_norm, progress, resume_dir, key)
        earlier += read_back
        entry["timing"]["escalation"] = entry["escalation"]["seconds"]
    for norm, smallest in smallest_by_norm.items():
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
        np.array([np.nan if v is None else v for v in smallest_linf], np.float64),
        escalated=entry.get("escalation"))
    entry["timing"]["checks"] = round(time.perf_counter() - checks_started, 3)
    entry["checks_passed"], entry["checks_complete"] = checks.summary(
        entry["checks"], target.has_threshold)
    seconds = time.perf_counter() - started + earlier
    entry["seconds"] = round(seconds, 2)
    entry["seconds_per_image"] = round(seconds / max(len(images), 1), 4)
    return entry
