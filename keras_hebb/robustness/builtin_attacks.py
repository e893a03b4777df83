"""The suite's built-in attacks: their registry entries and how each runs.

Each entry is one `attack_types.Attack` (norms, kind, stages, crafting,
settings and caps); `registry` registers `BUILTIN_ATTACKS` when it is
imported. See `registry` for how to add an attack.
"""

import zlib

import numpy as np

from keras_hebb.robustness import attacks, autoattack, bpda, cw, spsa, square
from keras_hebb.robustness.attack_types import Attack, Stage

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


_PGD = dict(defaults={"steps": 10, "restarts": 1}, presets={"full": {"steps": 20, "restarts": 2}},
            check=_at_least_one("steps", "restarts"), caps=_steps_caps("PGD"), caps_rank=0,
            legacy={"steps": "steps", "restarts": "restarts"})
_APGD_CAPS = "{steps} steps x {restarts} restart(s)"

#: The built-in entries, in registration order.
BUILTIN_ATTACKS = (
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
)
