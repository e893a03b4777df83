"""The command-line kit of the programs (`python -m export`,
`python -m training ...`, `python -m experiments ...`): TensorFlow's
start-up (environment defaults, its known start-up notices kept off
stderr), one usage error, argument parsers whose errors are one line, the
first line of an error, model loading.

It lives in the lowest program package, `export` (the `training` and
`experiments` programs sit on top of it), and imports nothing heavy: a
program imports it and calls `prepare_tensorflow()` before anything
imports TensorFlow.
"""

import argparse
import importlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

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


#: Lines TensorFlow 2.21 writes to stderr while it is imported, whatever
#: `TF_CPP_MIN_LOG_LEVEL` says (absl's pre-init warning, and oneDNN's notice
#: where oneDNN is on): `(start, contained)` pairs, both must match.
START_UP_NOTICES = (
    ("WARNING: All log messages before absl::InitializeLog() is called", ""),
    ("", "port.cc:153] oneDNN custom operations are on."),
)


def is_start_up_notice(line):
    """Whether `line` is one of TensorFlow's known `START_UP_NOTICES`."""
    return any(line.startswith(start) and contained in line
               for start, contained in START_UP_NOTICES)


def _filtered_stderr(run):
    """Calls `run()` with file descriptor 2 captured, then writes what it
    wrote to stderr back, without the `START_UP_NOTICES` lines (an error
    and its traceback pass through)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            return run()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not is_start_up_notice(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way, then imports it through
    `_filtered_stderr` (once: it removes itself)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module
            spec.loader.exec_module = lambda module: _filtered_stderr(lambda: load(module))
        return spec


def quiet_tensorflow_start_up():
    """Keeps TensorFlow's known start-up notices off stderr: the first
    `import tensorflow` (direct, or through Keras) runs with stderr
    filtered. Does nothing once TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def prepare_tensorflow():
    """What a program calls first: `set_tf_environment_defaults()` and
    `quiet_tensorflow_start_up()`."""
    set_tf_environment_defaults()
    quiet_tensorflow_start_up()


class UsageError(Exception):
    """A mistake the user can fix (arguments, paths): one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors raise `UsageError` with one line
    pointing to `--help`, instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def dispatch(argv, program, usage, subcommands):
    """Runs `python -m PROGRAM SUBCOMMAND [options]` and returns its exit
    status. `subcommands` maps each name to the module whose `main(argv)`
    runs it, imported only when used; no subcommand prints `usage`, an
    unknown one is a one-line usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in subcommands:
        expected = ", ".join(repr(name) for name in subcommands)
        return usage_failure(UsageError(
            f"unknown command {command!r}: expected one of {expected} ({program} --help)."))
    return importlib.import_module(subcommands[command]).main(rest)


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
