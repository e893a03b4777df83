"""The one table of the suite's attacks: name -> norms, kind, how to run it.

Each `Attack` says which norms it supports, which kind it is (what the
report's diagnostic columns group it under), how it expands into cascade
stages for a `SuiteConfig` (restarts, BPDA modes, transfer sources) and how
one stage crafts adversarial examples for the images still standing.
Each entry also owns its settings (defaults and per-preset caps), its part
of the report's caps line, its cache group and the extra columns it counts
in: adding an attack to the suite is one `register(Attack(...))`, here or
at run time, and its name in `SuiteConfig.attacks` (or `--attacks`).

Kinds, in cascade order:

- `gradient`: plain input gradients of the model (cleverhans attacks);
- `autoattack`: AutoAttack's gradient attacks (Croce & Hein 2020): APGD-CE
  and APGD-T, on the plain gradients;
- `bpda`: gradients through the layers' declared surrogates (adaptive);
- `black_box`: no gradients of the target: Square (AutoAttack's
  gradient-free component), transfer (plain or BPDA gradients of a source
  model), SPSA.
"""

import dataclasses
import zlib
from typing import Callable

import numpy as np

from keras_hebb.robustness import attacks, autoattack, bpda, cw, spsa, square

#: Kinds in cascade order.
KINDS = ("gradient", "autoattack", "bpda", "black_box")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One cascade stage: an attack with fixed settings.

    Attributes:
        name: reported stage name (e.g. `pgd_ce`, `bpda_smooth`,
            `transfer_from_std`).
        attack: the registry name.
        run: restart index.
        settings: reported settings (steps, restart, surrogate, ...).
    """

    name: str
    attack: str
    run: int
    settings: dict


@dataclasses.dataclass
class StageInput:
    """What a stage's `craft` function gets.

    Attributes:
        target: the model under test (`suite._ModelUnderTest`).
        source: the transfer source model, or None.
        images, labels: the images still standing (numpy) and their labels.
        idx: their indices in the evaluated image set.
        norm, eps: the budget.
        config: the `SuiteConfig`.
        settings: the stage's settings (reported).
        cache: the attack's cache (`Attack.cache_group`, `cache_scope`):
            CW's minimal-distortion examples, transfer examples.
        progress: called after each image by per-image attacks, or None.
        seed: the suite's seed (for attacks with their own random draws).
        options: the attack's settings in `config` (steps, queries, ...).
    """

    target: object
    source: object
    images: np.ndarray
    labels: np.ndarray
    idx: np.ndarray
    norm: str
    eps: float
    config: object
    settings: dict
    cache: dict
    progress: object = None
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Attack:
    """A registry entry: everything the suite, its columns, checks and
    reports need to know about one attack.

    Attributes:
        name: the name used in `SuiteConfig.attacks` and `--attacks`.
        kind: one of `KINDS`.
        norms: the norms it runs for.
        stages: `(settings, target, sources) -> list of Stage` for one norm;
            `settings` are this attack's settings in the `SuiteConfig`.
        craft: `(StageInput) -> adversarial examples` (numpy, projected
            onto the budget ball and into [0, 1]; the suite checks it with
            `attacks.check_budget` and raises on a violation).
        select: `(idx, settings, cache) -> idx`: which of the standing
            images it attacks (default: all).
        description: one line for the documentation.
        per_image: runs image by image (the suite shows a progress bar).
        defaults: its settings (name -> value) in every preset.
        presets: preset name -> the settings that differ there from
            `defaults` (the caps of `quick`, `full`, ...).
        check: `(settings) -> None`, raises `ValueError` on a bad value.
        caps: `(settings) -> (label, detail)` or a string: its part of the
            report's caps line (`caps_line`); parts of the same
            `caps_rank` with the same detail are merged ("PGD and BPDA 20
            steps x 2 restarts"). `None`: not in the caps line.
        caps_rank: where its part stands in the caps line.
        cache_group: attacks of one group share one cache (default: the
            attack's own).
        cache_scope: `"norm"` (a cache per model and norm) or `"suite"`
            (one for the whole run, shared by every evaluated model).
        columns: reported columns it belongs to besides the kind's chain
            (`"paper_protocol"`, `"autoattack"`).
        legacy: setting name -> the flat `SuiteConfig` field that held it
            in reports written before attacks owned their settings.
    """

    name: str
    kind: str
    norms: tuple
    stages: Callable
    craft: Callable
    select: Callable = None
    description: str = ""
    per_image: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    presets: dict = dataclasses.field(default_factory=dict)
    check: Callable = None
    caps: Callable = None
    caps_rank: int = 100
    cache_group: str = None
    cache_scope: str = "norm"
    columns: tuple = ()
    legacy: dict = dataclasses.field(default_factory=dict)

    def settings_for(self, preset):
        """Its settings in suite preset `preset` (a copy)."""
        return {**self.defaults, **self.presets.get(preset, {})}


def _at_least_one(*keys):
    def check(settings):
        for key in keys:
            value = settings[key]
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"Invalid `{key}`: expected an integer >= 1. "
                                 f"Received: {key}={value!r}")
    return check


def _steps_caps(label):
    return lambda o: (label, f"{o['steps']} steps x {o['restarts']} restarts")


def _fgsm_stages(settings, target, sources):
    return [Stage("fgsm", "fgsm", 0, {"steps": 1})]


def _fgsm(s):
    return attacks.fgsm(s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.batch_size)


def _pgd_stages(name):
    def stages(settings, target, sources):
        return [Stage(name, name, run, {"steps": settings["steps"], "restart": run})
                for run in range(settings["restarts"])]
    return stages


def _start_seeds(s, stage):
    """One random-start seed per image: the suite's seed, the stage (a
    name), the restart, the budget and the image's index; an image's start
    does not depend on which other images are still standing."""
    return [(_seed(s), zlib.crc32(stage.encode()), int(i)) for i in s.idx]


def _pgd(loss):
    def craft(s):
        return attacks.pgd(s.target.fn, s.images, s.labels, s.eps, s.norm,
                           s.options["steps"], loss=loss, batch_size=s.config.batch_size,
                           early_stop=True, start_seeds=_start_seeds(s, f"pgd_{loss}"))
    return craft


def _mim_stages(settings, target, sources):
    return [Stage("mim", "mim", 0, {"steps": settings["steps"]})]


def _mim(s):
    return attacks.mim(s.target.fn, s.images, s.labels, s.eps, s.norm, s.options["steps"],
                       batch_size=s.config.batch_size)


def _cw_stages(settings, target, sources):
    return [Stage("cw_l2", "cw_l2", 0, {"steps": settings["steps"],
                                        "binary_search_steps": settings["binary_steps"],
                                        "max_images": settings["images"]})]


def _cw_select(idx, settings, cache):
    # CW runs once, on the first standing images it meets.
    return idx[np.isin(idx, list(cache))] if cache else idx[:settings["images"]]


def _cw(s):
    # A minimal-distortion attack: run once per image, then project its
    # example into each budget.
    missing = [i for i in s.idx if i not in s.cache]
    if missing:
        positions = np.searchsorted(s.idx, missing)
        found = cw.carlini_wagner_l2(
            s.target.fn, s.images[positions], s.labels[positions], s.target.num_classes,
            steps=s.options["steps"], binary_search_steps=s.options["binary_steps"],
            batch_size=s.config.batch_size)
        s.cache.update(zip(missing, found))
    return attacks.project(s.images, np.stack([s.cache[i] for i in s.idx]), s.norm, s.eps)


def _bpda_stages(settings, target, sources):
    if not target.surrogates:
        return []
    return [Stage(f"bpda_{mode}", "bpda", run,
                  {"steps": settings["steps"], "loss": "margin", "surrogate": mode,
                   "restart": run})
            for mode in settings["modes"] for run in range(settings["restarts"])]


def _bpda(s):
    # The BPDA model has the target's forward values: it may stop early.
    return attacks.pgd(s.target.bpda_fn(s.settings["surrogate"]), s.images, s.labels, s.eps,
                       s.norm, s.options["steps"], loss="margin",
                       batch_size=s.config.batch_size, early_stop=True,
                       start_seeds=_start_seeds(s, f"bpda_{s.settings['surrogate']}"))


def _check_bpda(settings):
    _at_least_one("steps", "restarts")(settings)
    modes = tuple(settings["modes"])
    if not modes or any(m not in bpda.MODES for m in modes):
        raise ValueError(f"Invalid BPDA `modes`: expected some of {list(bpda.MODES)}. "
                         f"Received: modes={list(modes)}")


def _transfer_stages(settings, target, sources):
    return [Stage(f"transfer_from_{source.name}", "transfer", 0,
                  {"steps": settings["steps"], "loss": "ce", "source": source.name})
            for source in sources]


def _transfer_bpda_stages(settings, target, sources):
    return [Stage(f"transfer_bpda_from_{source.name}", "transfer_bpda", 0,
                  {"steps": settings["steps"], "loss": "ce", "source": source.name,
                   "surrogate": settings["surrogate"]})
            for source in sources if source.surrogates]


def _transfer(s):
    # Crafted once per (source, gradients, budget, image); other targets
    # reuse them (`transfer` and `transfer_bpda` share the suite's cache).
    surrogate = s.settings.get("surrogate")
    cache = s.cache.setdefault((s.source.name, surrogate, s.norm, s.eps), {})
    missing = [i for i in s.idx if i not in cache]
    if missing:
        positions = np.searchsorted(s.idx, missing)
        source_fn = s.source.fn if surrogate is None else s.source.bpda_fn(surrogate)
        crafted = attacks.pgd(source_fn, s.images[positions], s.labels[positions], s.eps,
                              s.norm, s.options["steps"], loss="ce",
                              batch_size=s.config.batch_size)
        cache.update(zip(missing, crafted))
    return attacks.project(s.images, np.stack([cache[i] for i in s.idx]), s.norm, s.eps)


def _check_transfer_bpda(settings):
    _at_least_one("steps")(settings)
    if settings["surrogate"] not in bpda.MODES:
        raise ValueError(f"Invalid `surrogate`: expected one of {list(bpda.MODES)}. "
                         f"Received: surrogate={settings['surrogate']!r}")


def _spsa_stages(settings, target, sources):
    return [Stage("spsa", "spsa", 0, {"steps": settings["steps"],
                                      "samples": settings["samples"],
                                      "max_images": settings["images"]})]


def _spsa(s):
    return spsa.spsa(s.target.fn, s.images, s.labels, s.eps, s.options["steps"],
                     s.options["samples"], progress=s.progress)


def _apgd_stages(name):
    def stages(settings, target, sources):
        if name == "apgd_t" and target.num_classes < 4:
            return []  # the targeted DLR loss needs 4 classes
        reported = {"steps": settings["steps"]}
        if name == "apgd_t":
            reported["target_classes"] = min(settings["targets"], target.num_classes - 1)
        return [Stage(name, name, run, {**reported, "restart": run})
                for run in range(settings["restarts"])]
    return stages


def _seed(s):
    # Distinct, reproducible draws per restart and budget.
    return int(s.seed) * 1_000_003 + 7919 * int(s.settings.get("restart", 0)) + \
        int(round(s.eps * 1e6))


def _apgd_ce(s):
    adversarial, _ = autoattack.apgd(s.target.fn, s.images, s.labels, s.eps, s.norm,
                                     s.options["steps"], loss="ce", seed=_seed(s),
                                     batch_size=s.config.batch_size,
                                     start_seeds=_start_seeds(s, "apgd_ce"))
    return adversarial


def _apgd_t(s):
    adversarial, _ = autoattack.apgd_targeted(
        s.target.fn, s.images, s.labels, s.eps, s.norm, s.options["steps"],
        target_classes=s.settings["target_classes"], seed=_seed(s),
        batch_size=s.config.batch_size, start_seeds=_start_seeds(s, "apgd_t"))
    return adversarial


def _square_stages(settings, target, sources):
    return [Stage("square", "square", 0, {"queries": settings["queries"],
                                          "p_init": settings["p_init"]})]


def _square(s):
    adversarial, _ = square.square(s.target.fn, s.images, s.labels, s.eps, s.norm,
                                   s.options["queries"], p_init=s.options["p_init"],
                                   seed=_seed(s), batch_size=s.config.batch_size)
    return adversarial


def _check_square(settings):
    _at_least_one("queries")(settings)
    if not 0 < settings["p_init"] <= 1:
        raise ValueError("Invalid `p_init`: expected a fraction in (0, 1]. "
                         f"Received: p_init={settings['p_init']!r}")


REGISTRY = {}


def register(attack):
    """Adds `attack` (an `Attack`) to the registry; returns it.

    Raises:
        ValueError: on a duplicate name, an unknown kind, norm or cache
            scope, or defaults its own `check` refuses.
    """
    if attack.name in REGISTRY:
        raise ValueError(f"Invalid attack name: it is already registered. "
                         f"Received: name={attack.name!r}")
    if attack.kind not in KINDS:
        raise ValueError(f"Invalid attack kind: expected one of {list(KINDS)}. "
                         f"Received: kind={attack.kind!r}")
    if not attack.norms or any(n not in attacks.NORMS for n in attack.norms):
        raise ValueError(f"Invalid attack norms: expected some of {list(attacks.NORMS)}. "
                         f"Received: norms={attack.norms!r}")
    if attack.cache_scope not in ("norm", "suite"):
        raise ValueError("Invalid `cache_scope`: expected 'norm' or 'suite'. "
                         f"Received: cache_scope={attack.cache_scope!r}")
    for preset in (None, *attack.presets):
        settings = attack.settings_for(preset)
        unknown = sorted(set(settings) - set(attack.defaults))
        if unknown:
            raise ValueError(f"Invalid settings of preset {preset!r} of attack "
                             f"{attack.name!r}: not in its defaults. Received: {unknown}")
        if attack.check is not None:
            attack.check(settings)
    REGISTRY[attack.name] = attack
    return attack


_PGD = dict(defaults={"steps": 10, "restarts": 1}, presets={"full": {"steps": 20, "restarts": 2}},
            check=_at_least_one("steps", "restarts"), caps=_steps_caps("PGD"), caps_rank=0,
            legacy={"steps": "steps", "restarts": "restarts"})
_APGD_CAPS = "{steps} steps x {restarts} restart(s)"

for _entry in (
    Attack("fgsm", "gradient", ("linf", "l2"), _fgsm_stages, _fgsm,
           description="`fast_gradient_method`, cross-entropy, one step of size eps"),
    Attack("pgd_ce", "gradient", ("linf", "l2"), _pgd_stages("pgd_ce"), _pgd("ce"),
           description="`projected_gradient_descent`, cross-entropy, random start", **_PGD),
    Attack("pgd_margin", "gradient", ("linf", "l2"), _pgd_stages("pgd_margin"),
           _pgd("margin"), description="same, CW margin loss `max_{j!=y} z_j - z_y`", **_PGD),
    Attack("mim", "gradient", ("linf", "l2"), _mim_stages, _mim,
           description="`momentum_iterative_method`, cross-entropy",
           defaults={"steps": 10}, presets={"full": {"steps": 20}},
           check=_at_least_one("steps"), caps=lambda o: ("MIM", f"{o['steps']} steps"),
           caps_rank=1, legacy={"steps": "mim_steps"}),
    Attack("cw_l2", "gradient", ("l2",), _cw_stages, _cw, select=_cw_select,
           description="`CarliniWagnerL2` (shim), minimal distortion, projected per budget",
           defaults={"steps": 50, "binary_steps": 4, "images": 200},
           presets={"full": {"images": 400}},
           check=_at_least_one("steps", "binary_steps", "images"),
           caps=lambda o: ("CW-L2", f"{o['binary_steps']} binary steps x {o['steps']} "
                           f"iterations on at most {o['images']} images (the first standing "
                           "ones at the smallest L2 budget)"),
           caps_rank=7,
           legacy={"steps": "cw_steps", "binary_steps": "cw_binary_steps",
                   "images": "cw_images"}),
    Attack("apgd_ce", "autoattack", ("linf", "l2"), _apgd_stages("apgd_ce"), _apgd_ce,
           description="APGD with cross-entropy (`autoattack.apgd`), AutoAttack's first",
           defaults={"steps": 100, "restarts": 1},
           presets={"quick": {"steps": 10}, "full": {"steps": 50},
                    "autoattack_standard": {"steps": 100, "restarts": 5}},
           check=_at_least_one("steps", "restarts"),
           caps=lambda o: ("APGD-CE", _APGD_CAPS.format(**o)), caps_rank=4,
           columns=("paper_protocol", "autoattack"),
           legacy={"steps": "apgd_steps", "restarts": "apgd_restarts"}),
    Attack("apgd_t", "autoattack", ("linf", "l2"), _apgd_stages("apgd_t"), _apgd_t,
           description="APGD-T: targeted DLR loss at the most likely wrong classes",
           defaults={"steps": 100, "restarts": 1, "targets": 9},
           presets={"quick": {"steps": 10, "targets": 1}, "full": {"steps": 50, "targets": 3},
                    "autoattack_standard": {"steps": 100, "restarts": 1, "targets": 9}},
           check=_at_least_one("steps", "restarts", "targets"),
           caps=lambda o: ("APGD-T", _APGD_CAPS.format(**o)
                           + f" x {o['targets']} target classes"), caps_rank=5,
           columns=("paper_protocol", "autoattack"),
           legacy={"steps": "apgd_steps", "restarts": "apgd_restarts",
                   "targets": "apgd_targets"}),
    Attack("bpda", "bpda", ("linf", "l2"), _bpda_stages, _bpda,
           description="PGD (margin) through the layers' surrogate gradients",
           defaults={"steps": 10, "restarts": 1, "modes": ("smooth",)},
           presets={"full": {"steps": 20, "restarts": 2, "modes": ("smooth", "identity")}},
           check=_check_bpda, caps=_steps_caps("BPDA"), caps_rank=0,
           legacy={"steps": "steps", "restarts": "restarts", "modes": "bpda_modes"}),
    Attack("square", "black_box", ("linf", "l2"), _square_stages, _square,
           description="Square Attack (`square.square`): random search, no gradients",
           defaults={"queries": 1000, "p_init": 0.8},
           presets={"quick": {"queries": 100}, "full": {"queries": 500},
                    "autoattack_standard": {"queries": 5000}},
           check=_check_square, caps=lambda o: ("Square", f"{o['queries']} queries"),
           caps_rank=6, columns=("autoattack",),
           legacy={"queries": "square_queries", "p_init": "square_p_init"}),
    Attack("transfer", "black_box", ("linf", "l2"), _transfer_stages, _transfer,
           description="PGD (cross-entropy) on a source model, evaluated on the target",
           defaults={"steps": 10}, presets={"quick": {"steps": 5}},
           check=_at_least_one("steps"),
           caps=lambda o: ("transfer PGD", f"{o['steps']} steps on the source"), caps_rank=2,
           cache_group="transfer", cache_scope="suite", legacy={"steps": "transfer_steps"}),
    Attack("transfer_bpda", "black_box", ("linf", "l2"), _transfer_bpda_stages, _transfer,
           description="BPDA (PGD, cross-entropy, the first BPDA surrogate) on a source "
                       "model that declares surrogates, evaluated on the target",
           defaults={"steps": 10, "surrogate": "smooth"}, presets={"quick": {"steps": 5}},
           check=_check_transfer_bpda,
           caps=lambda o: ("transfer from BPDA on a source with surrogates",
                           f"{o['steps']} steps"), caps_rank=3,
           cache_group="transfer", cache_scope="suite", legacy={"steps": "transfer_steps"}),
    Attack("spsa", "black_box", ("linf",), _spsa_stages, _spsa,
           select=lambda idx, settings, cache: idx[:settings["images"]],
           description="`spsa` (shim), gradient-free, on a subset", per_image=True,
           defaults={"steps": 10, "samples": 64, "images": 4},
           presets={"full": {"steps": 20, "samples": 128, "images": 8}},
           check=_at_least_one("steps", "samples", "images"),
           caps=lambda o: ("SPSA", f"{o['steps']} steps x {o['samples']} probes on at most "
                           f"{o['images']} images per L∞ budget"), caps_rank=8,
           legacy={"steps": "spsa_steps", "samples": "spsa_samples", "images": "spsa_images"}),
):
    register(_entry)


def cascade_order(names):
    """`names` sorted in cascade order: by kind (`KINDS`), then registration."""
    order = list(REGISTRY)
    return tuple(sorted(names, key=lambda n: (KINDS.index(REGISTRY[n].kind), order.index(n))))


def attack_names():
    """The names of every registered attack (the live registry, with those
    added by `register` at run time), in cascade order."""
    return cascade_order(REGISTRY)


#: Names of the built-in attacks, in cascade order (`attack_names()` for
#: the live registry).
ATTACK_NAMES = attack_names()
#: (name, kind, norms) of the built-in attacks, in cascade order.
ATTACKS = tuple((n, REGISTRY[n].kind, REGISTRY[n].norms) for n in ATTACK_NAMES)


def stages(config, target, norm, sources):
    """The cascade's stages for one norm, in order (`Stage` list)."""
    result = []
    for name in cascade_order(config.attacks):
        attack = REGISTRY[name]
        if norm in attack.norms:
            result.extend(attack.stages(config.attack_settings[name], target, sources))
    return result


def report_settings(settings):
    """`{"attacks": [...], "attack_settings": {name: settings}}` from a
    report's `settings` (`report.json`): its own `attack_settings`, or for
    a report written before attacks owned their settings, each attack's
    values read from the flat fields named in its `legacy` map."""
    names = list(settings.get("attacks") or [])
    owned = settings.get("attack_settings")
    if owned is None:
        owned = {n: {key: settings.get(flat) for key, flat in REGISTRY[n].legacy.items()}
                 for n in names if n in REGISTRY}
    return {"attacks": names, "attack_settings": owned}


def caps_line(settings):
    """The caps of the attacks a report ran, in one sentence, from its
    `settings` (`report.json`, or `report_settings` of it)."""
    suite = report_settings(settings)
    parts = []  # [rank, labels, detail]
    order = list(REGISTRY)
    named = [n for n in suite["attacks"] if n in REGISTRY and REGISTRY[n].caps is not None]
    for name in sorted(named, key=lambda n: (REGISTRY[n].caps_rank, order.index(n))):
        attack = REGISTRY[name]
        text = attack.caps(suite["attack_settings"].get(name) or attack.defaults)
        label, detail = (text, None) if isinstance(text, str) else text
        same = next((p for p in parts if p[0] == attack.caps_rank and detail is not None
                     and p[2] == detail), None)
        if same is None:
            parts.append([attack.caps_rank, [label], detail])
        elif label not in same[1]:
            same[1].append(label)
    return "; ".join(
        " ".join([", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1
                  else labels[0]] + ([detail] if detail is not None else []))
        for _, labels, detail in parts)


#: The flat `SuiteConfig` fields a results summary kept before attacks
#: owned their settings (in that order, so old summaries regenerate
#: byte-identical).
_LEGACY_SUMMARY_KEYS = (
    "attacks", "steps", "restarts", "mim_steps", "transfer_steps", "bpda_modes", "cw_steps",
    "cw_binary_steps", "cw_images", "spsa_steps", "spsa_samples", "spsa_images",
    "apgd_steps", "apgd_restarts", "apgd_targets", "square_queries")


def suite_summary(settings):
    """The suite settings a results summary keeps of a report's `settings`
    (every cap; `caps_line` reads it): its attacks and their settings, or
    for a report written before attacks owned their settings, its flat
    fields."""
    if "attack_settings" in settings:
        return {"attacks": settings.get("attacks"),
                "attack_settings": settings["attack_settings"]}
    return {k: settings.get(k) for k in _LEGACY_SUMMARY_KEYS}
