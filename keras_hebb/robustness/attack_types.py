"""What a registry entry is: an attack (`Attack`) and the cascade stages it
expands into (`Stage`, `StageInput`). `registry` holds the entries."""

import dataclasses
from typing import Callable

import numpy as np

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
