"""Argument checks shared by the layers: one clear `ValueError` per mistake."""

import numbers


class InvalidArgument(ValueError):
    """A bad argument: "Invalid value for `name`: expected ... Received: ...".

    Attributes:
        name: the argument's name, as the caller wrote it.
        value: the value received.
        expected: what was expected, a phrase ("a number in (0, 1]").
    """

    def __init__(self, name, value, expected):
        super().__init__(
            f"Invalid value for `{name}`: expected {expected}. "
            f"Received: {name}={value!r}"
        )
        self.name = name
        self.value = value
        self.expected = expected


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_fraction(name, value, *, allow_zero=False, allow_one=True):
    """Checks that `value` is a number in (0, 1]; `allow_zero` closes the
    interval at 0, `allow_one=False` opens it at 1."""
    ok = _is_number(value) and (0.0 <= value if allow_zero else 0.0 < value) and (
        value <= 1.0 if allow_one else value < 1.0)
    if not ok:
        interval = ("[0" if allow_zero else "(0") + (", 1]" if allow_one else ", 1)")
        raise InvalidArgument(name, value, f"a number in {interval}")
    return float(value)


def check_positive(name, value):
    if not _is_number(value) or not value > 0:  # NaN fails too
        raise InvalidArgument(name, value, "a number > 0")
    return float(value)


def check_non_negative(name, value):
    if not _is_number(value) or value < 0:
        raise InvalidArgument(name, value, "a number >= 0")
    return float(value)


def check_positive_int(name, value, *, odd=False):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (ok and value > 0 and (not odd or value % 2 == 1)):
        raise InvalidArgument(
            name, value, "a positive odd integer" if odd else "a positive integer")
    return int(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise InvalidArgument(name, value, "True or False")
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise InvalidArgument(name, value, f"one of {list(choices)}")
    return value


def check_image_rank(layer, input_shape):
    """Layers of this package take NHWC images: rank 4."""
    if len(input_shape) != 4:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) expects a rank-4 "
            f"input (batch, height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
