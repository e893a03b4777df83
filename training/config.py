"""Training configs: YAML files read with `safe_load`, validated, overridable.

A config is a flat mapping; every key has a default (`DEFAULTS`) except
`dataset` and `architecture`. Unknown keys and bad values raise
`ConfigError` with one sentence naming the key, the value and what was
expected. `--set key=value` overrides are parsed as YAML scalars or lists
(`epochs=3`, `augment=false`, `hah_alphas=[0.01,0.005]`, and sub-keys of
the two mappings: `block_options.threshold=null`, `adversarial.eps=0.1`)
and go through the same checks. (Checking dataset and architecture names imports keras_hebb.)
"""

import difflib
import numbers

import yaml

#: Every key a config may hold, with its default.
DEFAULTS = {
    "description": "",
    "dataset": None,
    "data_dir": None,
    "train_split": "train",
    "validation_split": "test",
    "train_limit": None,
    "validation_limit": None,
    "architecture": None,
    "hah_alphas": None,
    "block_options": {},
    "weight_init": "glorot_uniform",
    "epochs": 1,
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_milestones": [],
    "lr_factor": 0.1,
    "augment": True,
    "noise_sigma": 0.0,
    "noise_fraction": 1.0,
    "adversarial": None,
    "seed": 2022,
    "deterministic": True,
    "strategy": "auto",
    "sparsity_images": 256,
    "prune_to": None,
}
REQUIRED = ("dataset", "architecture")
OPTIMIZERS = ("adam", "sgd")
#: = keras_hebb.architectures.WEIGHT_INITS (this module imports no TensorFlow).
WEIGHT_INITS = ("glorot_uniform", "torch")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
#: HaHBlock arguments the architecture sets (widths, 3x3 same convs) or
#: another config key does (weight_init); `block_options` may set the others.
ARCHITECTURE_BLOCK_ARGUMENTS = ("filters", "kernel_size", "strides", "padding",
                                "kernel_initializer")


class ConfigError(ValueError):
    """A config or an override is invalid; the message is one sentence."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bad(key, value, expected):
    return ConfigError(
        f"Invalid config value {key}={value!r}: expected {expected}."
    )


def _check_int(key, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < low:
        what = f"an integer >= {low}" + (" or null" if allow_none else "")
        raise _bad(key, value, what)
    return int(value)


def _check_positive_number(key, value):
    if not _is_number(value) or not value > 0:
        raise _bad(key, value, "a number > 0")
    return float(value)


def _check_choice(key, value, choices):
    if value not in choices:
        raise _bad(key, value, f"one of {list(choices)}")
    return value


def _check_string(key, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(key, value, "a non-empty string" + (" or null" if allow_none else ""))
    return value


def _check_architecture(value):
    from keras_hebb.architectures import PRESETS

    if isinstance(value, str):
        return _check_choice("architecture", value, sorted(PRESETS))
    if isinstance(value, dict):
        # A custom VGG: {widths: [16, M, 32, M], hah_blocks: 1}.
        unknown = sorted(set(value) - {"widths", "hah_blocks"})
        widths = value.get("widths")
        hah_blocks = value.get("hah_blocks", 0)
        ok_widths = (
            isinstance(widths, list) and widths
            and all(w == "M" or (_is_int(w) and w > 0) for w in widths)
        )
        convs = [w for w in widths or [] if w != "M"] if ok_widths else []
        if (not unknown and ok_widths and convs and _is_int(hah_blocks)
                and 0 <= hah_blocks <= len(convs)):
            return {"widths": list(widths), "hah_blocks": int(hah_blocks)}
    raise _bad(
        "architecture", value,
        f"one of {sorted(PRESETS)} or a mapping {{widths: [ints and 'M'], "
        f"hah_blocks: int <= number of convs}}",
    )


def _check_alphas(value):
    if value is None or (_is_number(value) and value >= 0):
        return value if value is None else float(value)
    if isinstance(value, list) and value and all(
        _is_number(a) and a >= 0 for a in value
    ):
        return [float(a) for a in value]
    raise _bad("hah_alphas", value,
               "null (the paper's), a number >= 0 or a list of numbers >= 0")


def block_options():
    """The `HaHBlock` arguments a config's `block_options` may set (e.g.
    `threshold: null` for an ablation): all but the architecture's."""
    import inspect

    from keras_hebb.layers import HaHBlock

    parameters = inspect.signature(HaHBlock.__init__).parameters.values()
    return [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD
            and p.name not in ("self", *ARCHITECTURE_BLOCK_ARGUMENTS)]


def _check_block_options(value):
    """A checked `block_options`: one mapping for every HaH block, or a
    list of one mapping per block (the architecture checks the count)."""
    known = block_options()
    if value is None:
        return {}
    if isinstance(value, list) and value:
        return [_check_one_block(v, f"block_options[{i}]", known) for i, v in enumerate(value)]
    return _check_one_block(value, "block_options", known)


def _check_one_block(value, where, known):
    from keras_hebb.errors import InvalidArgument
    from keras_hebb.layers import HaHBlock

    if not isinstance(value, dict):
        either = "" if "[" in where else ", or a list of such mappings (one per HaH block)"
        raise _bad(where, value, f"a mapping with keys from {known}{either}")
    for key in value:
        if key not in known:
            raise ConfigError(
                f"Unknown config key {f'{where}.{key}'!r}: expected one of "
                f"{known}{_suggest(key, known)}."
            )
    if "activity_regularizer" in value:
        import keras

        try:
            keras.regularizers.get(value["activity_regularizer"])
        except (ValueError, TypeError):
            raise _bad(f"{where}.activity_regularizer", value["activity_regularizer"],
                       "a Keras regularizer, e.g. {class_name: L1, config: {l1: 1.0e-4}} "
                       "(YAML reads 1e-4, without a dot, as a string)") from None
    # HaHBlock checks its own arguments (the one place that knows them);
    # the checked values are its attributes of the same names.
    try:
        # "zeros": a random initializer would draw from Python's random state.
        block = HaHBlock(1, **value, kernel_initializer="zeros",
                         name="block_options_check")
    except InvalidArgument as error:
        raise _bad(f"{where}.{error.name}", error.value, error.expected) from None
    return {key: _plain(getattr(block, key)) for key in value}


def _plain(value):
    """A checked `block_options` value as the config stores it (YAML): a
    regularizer as Keras serializes it."""
    import keras

    if isinstance(value, keras.regularizers.Regularizer):
        return keras.regularizers.serialize(value)
    return value


def _check_adversarial(value):
    """`null` or the complete options of `HebbianModel(adversarial=...)`
    (checked there, the one place that knows them)."""
    from keras_hebb.errors import InvalidArgument
    from keras_hebb.hebbian_model import ADVERSARIAL_DEFAULTS, adversarial_options

    if value is not None and not isinstance(value, dict):
        raise _bad("adversarial", value,
                   f"null or a mapping with keys from {list(ADVERSARIAL_DEFAULTS)}")
    for key in value or {}:
        if key not in ADVERSARIAL_DEFAULTS:
            raise ConfigError(
                f"Unknown config key {f'adversarial.{key}'!r}: expected one of "
                f"{list(ADVERSARIAL_DEFAULTS)}{_suggest(key, ADVERSARIAL_DEFAULTS)}."
            )
    try:
        return adversarial_options(value)
    except InvalidArgument as error:
        raise _bad(error.name, error.value, error.expected) from None


def _check_milestones(value):
    if not isinstance(value, list) or not all(_is_int(m) and m >= 1 for m in value) or (
        sorted(set(value)) != value
    ):
        raise _bad("lr_milestones", value,
                   "an increasing list of epoch numbers >= 1 (e.g. [60, 80])")
    return [int(m) for m in value]


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merged(raw):
    """`DEFAULTS` updated with `raw`, once every key is known and every
    required one given."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Invalid config: expected a mapping of keys to values, received "
            f"a {type(raw).__name__}."
        )
    for key in raw:
        if key not in DEFAULTS:
            raise ConfigError(
                f"Unknown config key {key!r}{_suggest(key, DEFAULTS)}; known keys: "
                f"{', '.join(DEFAULTS)}."
            )
    config = {**DEFAULTS, **raw}
    for key in REQUIRED:
        if config[key] is None:
            raise ConfigError(f"Missing config key {key!r}: it has no default.")
    return config


def _check_data_keys(config):
    """The description and the data's keys, checked in place."""
    from keras_hebb.data import DATASETS

    config["description"] = str(config["description"] or "")
    config["dataset"] = _check_choice("dataset", config["dataset"], sorted(DATASETS))
    config["data_dir"] = _check_string("data_dir", config["data_dir"], allow_none=True)
    for key in ("train_split", "validation_split"):
        config[key] = _check_string(key, config[key])
    for key in ("train_limit", "validation_limit"):
        config[key] = _check_int(key, config[key], 1, allow_none=True)


def _check_model_and_schedule_keys(config):
    """The network's keys and the optimization schedule's, checked in place."""
    config["architecture"] = _check_architecture(config["architecture"])
    config["hah_alphas"] = _check_alphas(config["hah_alphas"])
    config["block_options"] = _check_block_options(config["block_options"])
    config["epochs"] = _check_int("epochs", config["epochs"], 1)
    config["batch_size"] = _check_int("batch_size", config["batch_size"], 1)
    config["optimizer"] = _check_choice("optimizer", config["optimizer"], OPTIMIZERS)
    config["weight_init"] = _check_choice("weight_init", config["weight_init"], WEIGHT_INITS)
    config["learning_rate"] = _check_positive_number("learning_rate", config["learning_rate"])
    config["lr_milestones"] = _check_milestones(config["lr_milestones"])
    factor = config["lr_factor"]
    if not _is_number(factor) or not 0 < factor <= 1:
        raise _bad("lr_factor", factor, "a number in (0, 1]")
    config["lr_factor"] = float(factor)


def _check_run_keys(config):
    """Augmentation, determinism, seed, strategy, statistics and pruning
    keys, checked in place."""
    for key in ("augment", "deterministic"):
        if not isinstance(config[key], bool):
            raise _bad(key, config[key], "true or false")
    sigma = config["noise_sigma"]
    if not _is_number(sigma) or not 0 <= sigma < float("inf"):
        raise _bad("noise_sigma", sigma, "a number >= 0 (0: no Gaussian noise augmentation)")
    config["noise_sigma"] = float(sigma)
    fraction = config["noise_fraction"]
    if not _is_number(fraction) or not 0 < fraction <= 1:
        raise _bad("noise_fraction", fraction,
                   "a number in (0, 1]: the share of each batch that gets noise")
    if fraction != 1 and sigma == 0:
        raise _bad("noise_fraction", fraction,
                   "1.0 when noise_sigma is 0 (there is no noise to share)")
    config["noise_fraction"] = float(fraction)
    config["adversarial"] = _check_adversarial(config["adversarial"])
    config["seed"] = _check_int("seed", config["seed"], 0)
    config["strategy"] = _check_choice("strategy", config["strategy"], STRATEGIES)
    config["sparsity_images"] = _check_int("sparsity_images", config["sparsity_images"], 0)
    prune_to = config["prune_to"]
    if prune_to is not None and not (_is_number(prune_to) and 0 < prune_to < 1):
        raise _bad("prune_to", prune_to, "null or a fraction of weights in (0, 1)")
    config["prune_to"] = None if prune_to is None else float(prune_to)


def validate(raw):
    """A complete, checked config from a mapping of user values.

    Args:
        raw: mapping of config keys to values (from YAML and overrides).

    Returns:
        A new dict with every key of `DEFAULTS`.

    Raises:
        ConfigError: an unknown key, a missing required key or a bad value.
    """
    config = _merged(raw)
    _check_data_keys(config)
    _check_model_and_schedule_keys(config)
    _check_run_keys(config)
    return config


def parse_override(text):
    """`(key, value)` from a `key=value` override; the value is YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"Invalid override {text!r}: expected key=value, e.g. --set epochs=3."
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(
            f"Invalid override {text!r}: the value is not valid YAML."
        ) from None
    return key, parsed


def apply_overrides(raw, overrides):
    """`raw` updated with `--set` overrides (`block_options.sigma=0.2` too;
    on a per-block list of block_options, in every block's)."""
    raw = dict(raw)
    for text in overrides:
        key, value = parse_override(text)
        head, _, sub = key.partition(".")
        if head not in DEFAULTS:
            raise ConfigError(
                f"Unknown config key {head!r} in --set {text}"
                f"{_suggest(head, DEFAULTS)}; known keys: {', '.join(DEFAULTS)}."
            )
        if sub:
            if head not in ("block_options", "adversarial"):
                raise ConfigError(
                    f"Invalid override --set {text}: only block_options and "
                    f"adversarial have sub-keys (e.g. block_options.threshold=null, "
                    f"adversarial.eps=0.1)."
                )
            current = raw.get(head) or {}
            if isinstance(current, list):
                # A per-block block_options: the sub-key in every block's.
                raw[head] = [dict(o, **{sub: value}) if isinstance(o, dict) else o
                             for o in current]
                continue
            options = dict(current)
            options[sub] = value
            raw[head] = options
        else:
            raw[head] = value
    return raw


def load_config(path, overrides=()):
    """The validated config of a YAML file with `--set` overrides applied.

    Raises:
        ConfigError: the file is missing or not YAML, or the config is
            invalid (see `validate`).
    """
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as error:
        raise ConfigError(f"Cannot read config file {path}: {error.strerror}.") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"Config file {path} is not valid YAML{line}.") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of keys to values, not a "
            f"{type(raw).__name__}."
        )
    return validate(apply_overrides(raw, overrides))


def dump_config(config):
    """YAML text of a config, keys in `DEFAULTS` order."""
    return yaml.safe_dump(
        {key: config[key] for key in DEFAULTS}, sort_keys=False,
        default_flow_style=None,
    )


def learning_rate_at(config, epoch):
    """Learning rate of a 0-based epoch: x`lr_factor` at each milestone.

    A milestone m (1-based epoch count, as in PyTorch's MultiStepLR) lowers
    the rate from epoch index m on: with milestones [60, 80] epochs 0-59 use
    the base rate, 60-79 a tenth of it, 80+ a hundredth.
    """
    passed = sum(1 for m in config["lr_milestones"] if epoch >= m)
    return config["learning_rate"] * config["lr_factor"] ** passed
