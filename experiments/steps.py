"""Steps of the experiments (`demo`, `results`, `sweep`): a program run
in-process, and what the steps leave behind.

Each step is the program a user would run (`python -m training train`,
`python -m training evaluate`, `python -m export`) called with the same
arguments in this process: one TensorFlow start instead of one per step.
"""

import json
import time

from export.cli import UsageError


class StepFailed(UsageError):
    """A step's program returned a non-zero status (its own message is
    already printed)."""


def program(name):
    """The `main(argv)` of `python -m training train|evaluate` or `export`."""
    if name == "export":
        from export.command import main
    elif name == "train":
        from training.train import main
    elif name == "evaluate":
        from training.evaluate import main
    else:
        raise ValueError(f"Unknown program {name!r}: expected train, evaluate or export.")
    return main


def run(title, name, arguments):
    """Runs program `name` with `arguments`; returns its wall time in seconds.

    Raises:
        StepFailed: the program returned a non-zero status.
    """
    command = "python -m " + ("export" if name == "export" else "training " + name)
    print(f"\n=== {title}: {command} {' '.join(arguments)}", flush=True)
    start = time.time()
    status = program(name)(arguments)
    if status:
        raise StepFailed(f"step '{title}' failed with status {status}; its output is above.")
    seconds = time.time() - start
    print(f"=== {title}: done in {seconds:.0f} s", flush=True)
    return seconds


def load_json(path):
    """The JSON document at `path` (a finished step's output), or None when
    missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


#: The program name of `python -m experiments SUBCOMMAND` before it moved
#: out of `training`: reports made then recorded it in their first lines.
_MOVED_FROM = "python -m training"


def made_by(subcommand, argv, report_path):
    """The command a report names as the one that made it:
    `python -m experiments SUBCOMMAND ARGV`. A report at `report_path`
    made by the same subcommand and arguments before the program moved
    (`python -m training SUBCOMMAND ARGV`) keeps the command it recorded,
    so rewriting it from the same files gives the same bytes."""
    arguments = " ".join([subcommand, *argv])
    recorded = f"{_MOVED_FROM} {arguments}"
    try:
        with open(report_path) as f:
            if f"Made by `{recorded}`" in f.read():
                return recorded
    except OSError:
        pass
    return f"python -m experiments {arguments}"
