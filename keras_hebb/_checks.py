"""Argument checks shared by the layers: one clear `ValueError` per mistake."""

import numbers


def check_fraction(name, value, *, allow_zero=False):
    """Checks that `value` is a number in (0, 1] (or [0, 1] with allow_zero)."""
    low = "[0, 1]" if allow_zero else "(0, 1]"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = (0.0 <= value <= 1.0) if allow_zero else (0.0 < value <= 1.0)
    if not ok:
        raise ValueError(
            f"Invalid value for `{name}`: expected a number in {low}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_non_negative(name, value):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or value < 0:
        raise ValueError(
            f"Invalid value for `{name}`: expected a number >= 0. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_positive_int(name, value, *, odd=False):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and value > 0 and (not odd or value % 2 == 1)
    if not ok:
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(
            f"Invalid value for `{name}`: expected {kind}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value for `{name}`: expected True or False. "
            f"Received: {name}={value!r}"
        )
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for `{name}`: expected one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_image_rank(layer, input_shape):
    """Layers of this package take NHWC images: rank 4."""
    if len(input_shape) != 4:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) expects a rank-4 "
            f"input (batch, height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
