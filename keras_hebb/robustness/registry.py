"""The one table of the suite's attacks: name -> norms, kind, how to run it.

Each `Attack` says which norms it supports, which kind it is (what the
report's diagnostic columns group it under), how it expands into cascade
stages for a `SuiteConfig` (restarts, BPDA modes, transfer sources) and how
one stage crafts adversarial examples for the images still standing.
Adding an attack to the suite is one entry here (and its name in a preset).

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

from keras_hebb.robustness import attacks, autoattack, cw, spsa, square

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
        settings: the stage's settings.
        cache: a dict private to this attack for the whole norm (CW's
            minimal-distortion examples, transfer examples).
        progress: called after each image by per-image attacks, or None.
        seed: the suite's seed (for attacks with their own random draws).
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


@dataclasses.dataclass(frozen=True)
class Attack:
    """A registry entry.

    Attributes:
        name: the name used in `SuiteConfig.attacks` and `--attacks`.
        kind: one of `KINDS`.
        norms: the norms it runs for.
        stages: `(config, target, sources) -> list of Stage` for one norm.
        craft: `(StageInput) -> adversarial examples` (numpy, projected
            onto the budget ball and into [0, 1]; the suite checks it with
            `attacks.check_budget` and raises on a violation).
        select: `(idx, config, cache) -> idx`: which of the standing images
            it attacks (default: all).
        description: one line for the documentation.
        per_image: runs image by image (the suite shows a progress bar).
    """

    name: str
    kind: str
    norms: tuple
    stages: Callable
    craft: Callable
    select: Callable = None
    description: str = ""
    per_image: bool = False


def _fgsm_stages(config, target, sources):
    return [Stage("fgsm", "fgsm", 0, {"steps": 1})]


def _fgsm(s):
    return attacks.fgsm(s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.batch_size)


def _pgd_stages(name):
    def stages(config, target, sources):
        return [Stage(name, name, run, {"steps": config.steps, "restart": run})
                for run in range(config.restarts)]
    return stages


def _start_seeds(s, stage):
    """One random-start seed per image: the suite's seed, the stage (a
    name), the restart, the budget and the image's index; an image's start
    does not depend on which other images are still standing."""
    return [(_seed(s), zlib.crc32(stage.encode()), int(i)) for i in s.idx]


def _pgd(loss):
    def craft(s):
        return attacks.pgd(s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.steps,
                           loss=loss, batch_size=s.config.batch_size, early_stop=True,
                           start_seeds=_start_seeds(s, f"pgd_{loss}"))
    return craft


def _mim_stages(config, target, sources):
    return [Stage("mim", "mim", 0, {"steps": config.mim_steps})]


def _mim(s):
    return attacks.mim(s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.mim_steps,
                       batch_size=s.config.batch_size)


def _cw_stages(config, target, sources):
    return [Stage("cw_l2", "cw_l2", 0, {"steps": config.cw_steps,
                                        "binary_search_steps": config.cw_binary_steps,
                                        "max_images": config.cw_images})]


def _cw_select(idx, config, cache):
    # CW runs once, on the first standing images it meets.
    return idx[np.isin(idx, list(cache))] if cache else idx[:config.cw_images]


def _cw(s):
    # A minimal-distortion attack: run once per image, then project its
    # example into each budget.
    missing = [i for i in s.idx if i not in s.cache]
    if missing:
        positions = np.searchsorted(s.idx, missing)
        found = cw.carlini_wagner_l2(
            s.target.fn, s.images[positions], s.labels[positions], s.target.num_classes,
            steps=s.config.cw_steps, binary_search_steps=s.config.cw_binary_steps,
            batch_size=s.config.batch_size)
        s.cache.update(zip(missing, found))
    return attacks.project(s.images, np.stack([s.cache[i] for i in s.idx]), s.norm, s.eps)


def _bpda_stages(config, target, sources):
    if not target.surrogates:
        return []
    return [Stage(f"bpda_{mode}", "bpda", run,
                  {"steps": config.steps, "loss": "margin", "surrogate": mode,
                   "restart": run})
            for mode in config.bpda_modes for run in range(config.restarts)]


def _bpda(s):
    # The BPDA model has the target's forward values: it may stop early.
    return attacks.pgd(s.target.bpda_fn(s.settings["surrogate"]), s.images, s.labels, s.eps,
                       s.norm, s.config.steps, loss="margin", batch_size=s.config.batch_size,
                       early_stop=True,
                       start_seeds=_start_seeds(s, f"bpda_{s.settings['surrogate']}"))


def _transfer_stages(config, target, sources):
    return [Stage(f"transfer_from_{source.name}", "transfer", 0,
                  {"steps": config.transfer_steps, "loss": "ce", "source": source.name})
            for source in sources]


def _transfer_bpda_stages(config, target, sources):
    mode = config.bpda_modes[0] if config.bpda_modes else "smooth"
    return [Stage(f"transfer_bpda_from_{source.name}", "transfer_bpda", 0,
                  {"steps": config.transfer_steps, "loss": "ce", "source": source.name,
                   "surrogate": mode})
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
                              s.norm, s.config.transfer_steps, loss="ce",
                              batch_size=s.config.batch_size)
        cache.update(zip(missing, crafted))
    return attacks.project(s.images, np.stack([cache[i] for i in s.idx]), s.norm, s.eps)


def _spsa_stages(config, target, sources):
    return [Stage("spsa", "spsa", 0, {"steps": config.spsa_steps,
                                      "samples": config.spsa_samples,
                                      "max_images": config.spsa_images})]


def _spsa(s):
    return spsa.spsa(s.target.fn, s.images, s.labels, s.eps, s.config.spsa_steps,
                        s.config.spsa_samples, progress=s.progress)


def _apgd_stages(name):
    def stages(config, target, sources):
        if name == "apgd_t" and target.num_classes < 4:
            return []  # the targeted DLR loss needs 4 classes
        settings = {"steps": config.apgd_steps}
        if name == "apgd_t":
            settings["target_classes"] = min(config.apgd_targets, target.num_classes - 1)
        return [Stage(name, name, run, {**settings, "restart": run})
                for run in range(config.apgd_restarts)]
    return stages


def _seed(s):
    # Distinct, reproducible draws per restart and budget.
    return int(s.seed) * 1_000_003 + 7919 * int(s.settings.get("restart", 0)) + \
        int(round(s.eps * 1e6))


def _apgd_ce(s):
    adversarial, _ = autoattack.apgd(s.target.fn, s.images, s.labels, s.eps, s.norm,
                                     s.config.apgd_steps, loss="ce", seed=_seed(s),
                                     batch_size=s.config.batch_size,
                                     start_seeds=_start_seeds(s, "apgd_ce"))
    return adversarial


def _apgd_t(s):
    adversarial, _ = autoattack.apgd_targeted(
        s.target.fn, s.images, s.labels, s.eps, s.norm, s.config.apgd_steps,
        target_classes=s.settings["target_classes"], seed=_seed(s),
        batch_size=s.config.batch_size, start_seeds=_start_seeds(s, "apgd_t"))
    return adversarial


def _square_stages(config, target, sources):
    return [Stage("square", "square", 0, {"queries": config.square_queries,
                                          "p_init": config.square_p_init})]


def _square(s):
    adversarial, _ = square.square(s.target.fn, s.images, s.labels, s.eps, s.norm,
                                   s.config.square_queries, p_init=s.config.square_p_init,
                                   seed=_seed(s), batch_size=s.config.batch_size)
    return adversarial


REGISTRY = {}


def register(attack):
    """Adds `attack` (an `Attack`) to the registry; returns it.

    Raises:
        ValueError: on a duplicate name, an unknown kind or norm.
    """
    if attack.name in REGISTRY:
        raise ValueError(f"Attack {attack.name!r} is already registered.")
    if attack.kind not in KINDS:
        raise ValueError(f"Invalid kind {attack.kind!r}: expected one of {list(KINDS)}.")
    if not attack.norms or any(n not in attacks.NORMS for n in attack.norms):
        raise ValueError(f"Invalid norms {attack.norms!r}: expected some of "
                         f"{list(attacks.NORMS)}.")
    REGISTRY[attack.name] = attack
    return attack


for _entry in (
    Attack("fgsm", "gradient", ("linf", "l2"), _fgsm_stages, _fgsm,
           description="`fast_gradient_method`, cross-entropy, one step of size eps"),
    Attack("pgd_ce", "gradient", ("linf", "l2"), _pgd_stages("pgd_ce"), _pgd("ce"),
           description="`projected_gradient_descent`, cross-entropy, random start"),
    Attack("pgd_margin", "gradient", ("linf", "l2"), _pgd_stages("pgd_margin"),
           _pgd("margin"),
           description="same, CW margin loss `max_{j!=y} z_j - z_y`"),
    Attack("mim", "gradient", ("linf", "l2"), _mim_stages, _mim,
           description="`momentum_iterative_method`, cross-entropy"),
    Attack("cw_l2", "gradient", ("l2",), _cw_stages, _cw, select=_cw_select,
           description="`CarliniWagnerL2` (shim), minimal distortion, projected per budget"),
    Attack("apgd_ce", "autoattack", ("linf", "l2"), _apgd_stages("apgd_ce"), _apgd_ce,
           description="APGD with cross-entropy (`autoattack.apgd`), AutoAttack's first"),
    Attack("apgd_t", "autoattack", ("linf", "l2"), _apgd_stages("apgd_t"), _apgd_t,
           description="APGD-T: targeted DLR loss at the most likely wrong classes"),
    Attack("bpda", "bpda", ("linf", "l2"), _bpda_stages, _bpda,
           description="PGD (margin) through the layers' surrogate gradients"),
    Attack("square", "black_box", ("linf", "l2"), _square_stages, _square,
           description="Square Attack (`square.square`): random search, no gradients"),
    Attack("transfer", "black_box", ("linf", "l2"), _transfer_stages, _transfer,
           description="PGD (cross-entropy) on a source model, evaluated on the target"),
    Attack("transfer_bpda", "black_box", ("linf", "l2"), _transfer_bpda_stages, _transfer,
           description="BPDA (PGD, cross-entropy, the first BPDA surrogate) on a source "
                       "model that declares surrogates, evaluated on the target"),
    Attack("spsa", "black_box", ("linf",), _spsa_stages, _spsa,
           select=lambda idx, config, cache: idx[:config.spsa_images],
           description="`spsa` (shim), gradient-free, on a subset", per_image=True),
):
    register(_entry)

def cascade_order(names):
    """`names` sorted in cascade order: by kind (`KINDS`), then registration."""
    order = list(REGISTRY)
    return tuple(sorted(names, key=lambda n: (KINDS.index(REGISTRY[n].kind), order.index(n))))


#: Names of the built-in attacks, in cascade order.
ATTACK_NAMES = cascade_order(REGISTRY)
#: (name, kind, norms) of the built-in attacks, in cascade order.
ATTACKS = tuple((n, REGISTRY[n].kind, REGISTRY[n].norms) for n in ATTACK_NAMES)


def stages(config, target, norm, sources):
    """The cascade's stages for one norm, in order (`Stage` list)."""
    result = []
    for name in cascade_order(config.attacks):
        attack = REGISTRY[name]
        if norm in attack.norms:
            result.extend(attack.stages(config, target, sources))
    return result
