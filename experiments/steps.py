"""Steps of the pipelines (`demo`, `results`): a program run in-process.

Each step is the program a user would run (`python -m training train`,
`python -m training evaluate`, `python -m export`) called with the same
arguments in this process: one TensorFlow start instead of one per step.
"""

import time


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
        SystemExit: the program returned a non-zero status (its own
            message is already printed).
    """
    command = "python -m " + ("export" if name == "export" else "training " + name)
    print(f"\n=== {title}: {command} {' '.join(arguments)}", flush=True)
    start = time.time()
    status = program(name)(arguments)
    if status:
        raise SystemExit(f"error: step '{title}' failed with status {status}; "
                         "its output is above.")
    seconds = time.time() - start
    print(f"=== {title}: done in {seconds:.0f} s", flush=True)
    return seconds
