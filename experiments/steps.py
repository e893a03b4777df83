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


#: The commands a report may name as its maker: the program now, and
#: before it moved out of `training` (reports made then recorded that).
_PROGRAMS = ("python -m experiments", "python -m training")


def _recorded_command(report_path):
    """The command in the `Made by `...`` line of a report, or None."""
    try:
        with open(report_path) as f:
            for line in f:
                if line.startswith("Made by `"):
                    return line[len("Made by `"):].split("`", 1)[0]
    except OSError:
        pass
    return None


def made_by(subcommand, argv, report_path, parser):
    """The command a report names as the one that made it:
    `python -m experiments SUBCOMMAND ARGV`.

    A report at `report_path` that names a command with the same settings
    (`parser` gives both the same arguments, in any order; made before or
    after the program moved out of `training`) keeps the command it
    recorded, so rewriting it from the same files gives the same bytes.
    """
    command = " ".join(["python -m experiments", subcommand, *argv])
    recorded = _recorded_command(report_path)
    for program in _PROGRAMS:
        prefix = f"{program} {subcommand} "
        if recorded and recorded.startswith(prefix):
            try:
                same = (vars(parser.parse_args(recorded[len(prefix):].split()))
                        == vars(parser.parse_args(argv)))
            except UsageError:
                same = False
            return recorded if same else command
    return command
