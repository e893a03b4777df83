"""The command-line kit of the programs (`python -m export`,
`python -m training ...`): TensorFlow environment defaults, one usage
error, argument parsers whose errors are one line, the first line of an
error.

It lives in the lowest program package, `export` (the `training`
programs sit on top of it), and imports nothing heavy: a program imports
it and calls `set_tf_environment_defaults()` before anything imports
TensorFlow.
"""

import argparse
import os
import sys

#: Set before TensorFlow is imported, unless the user set them: oneDNN
#: doubles TensorFlow's CPU speed on the AMD CPUs we measured (it is off
#: there by default); level 2 keeps TensorFlow's C++ info logs quiet.
TF_ENVIRONMENT_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def set_tf_environment_defaults(environ=None):
    """Sets `TF_ENVIRONMENT_DEFAULTS` in `environ` (default `os.environ`)
    where unset; call it before TensorFlow is imported."""
    environ = os.environ if environ is None else environ
    for name, value in TF_ENVIRONMENT_DEFAULTS.items():
        environ.setdefault(name, value)


class UsageError(Exception):
    """A mistake the user can fix (arguments, paths): one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors raise `UsageError` with one line
    pointing to `--help`, instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def first_line(error):
    """The first line of an error's message (its type name if empty)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def usage_failure(error, stream=None):
    """Prints `error: <first line>` on stderr; returns exit status 2."""
    print(f"error: {first_line(error)}", file=stream or sys.stderr)
    return 2


def load_model(path, compile=False, error=UsageError):
    """The Keras model in the `.keras` file `path` (keras_hebb's layers
    registered); `error` (a `UsageError` by default) with one line naming
    the file if it is missing or unreadable."""
    if not os.path.isfile(path):
        raise error(f"Model file not found: {path}")
    import keras

    import keras_hebb  # noqa: F401  (registers the layers for deserialization)

    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as failure:  # Keras raises many types for a bad file
        raise error(f"Cannot load model {path}: {first_line(failure)}") from failure
