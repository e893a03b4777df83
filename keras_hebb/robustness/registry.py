"""The one table of the suite's attacks: name -> norms, kind, how to run it.

Each `Attack` says which norms it supports, which kind it is (what the
report's diagnostic columns group it under), how it expands into cascade
stages for a `SuiteConfig` (restarts, BPDA modes, transfer sources) and how
one stage crafts adversarial examples for the images still standing.
Each entry also owns its settings (defaults and per-preset caps), its part
of the report's caps line, its cache group and the extra columns it counts
in: adding an attack to the suite is one `register(Attack(...))` (the
built-in ones are in `builtin_attacks`; yours at run time), and its name
in `SuiteConfig.attacks` (or `--attacks`).

Kinds, in cascade order:

- `gradient`: plain input gradients of the model (cleverhans attacks);
- `autoattack`: AutoAttack's gradient attacks (Croce & Hein 2020): APGD-CE
  and APGD-T, on the plain gradients;
- `bpda`: gradients through the layers' declared surrogates (adaptive);
- `black_box`: no gradients of the target: Square (AutoAttack's
  gradient-free component), transfer (plain or BPDA gradients of a source
  model), SPSA.
"""

from keras_hebb.robustness import attacks
from keras_hebb.robustness.attack_types import KINDS, Attack, Stage, StageInput  # noqa: F401
from keras_hebb.robustness.builtin_attacks import BUILTIN_ATTACKS

#: name -> `Attack`: every registered attack.
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


for _entry in BUILTIN_ATTACKS:
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
