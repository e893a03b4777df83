"""`python -m training {train,evaluate} ...`: dispatch to a subcommand."""

import sys

from export.cli import prepare_tensorflow

# Before anything imports TensorFlow (a user's choice wins).
prepare_tensorflow()

USAGE = """usage: python -m training {train,evaluate} [options]

  train     train a model from a YAML config into a run directory
            (python -m training train --help)
  evaluate  robustness report of trained models
            (python -m training evaluate --help)

The demo, results and sweep programs are `python -m experiments ...`."""

#: Subcommands that moved to `python -m experiments`; still forwarded.
MOVED = ("demo", "results", "sweep")


def main(argv=None):
    """Runs a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    # Each subcommand is imported only when used: evaluate needs the
    # attack libraries, train does not.
    if command == "train":
        from training import train

        return train.main(rest)
    if command == "evaluate":
        from training import evaluate

        return evaluate.main(rest)
    if command in MOVED:
        from experiments.__main__ import main as experiments_main

        print(f"note: `python -m training {command}` is now `python -m experiments {command}`.",
              file=sys.stderr)
        return experiments_main([command, *rest])
    print(f"error: unknown command {command!r}: expected 'train' or 'evaluate' "
          "(python -m training --help).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
