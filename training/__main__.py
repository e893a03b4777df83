"""`python -m training {train,evaluate} ...`: dispatch to a subcommand."""

import sys

from export.cli import UsageError, dispatch, prepare_tensorflow, usage_failure

# Before anything imports TensorFlow (a user's choice wins).
prepare_tensorflow()

USAGE = """usage: python -m training {train,evaluate} [options]

  train     train a model from a YAML config into a run directory
            (python -m training train --help)
  evaluate  robustness report of trained models
            (python -m training evaluate --help)

The demo, results and sweep programs are `python -m experiments ...`."""

#: Subcommands that moved to `python -m experiments` (training never imports
#: experiments: docs/ARCHITECTURE.md).
MOVED = ("demo", "results", "sweep")


def main(argv=None):
    """Runs a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MOVED:
        return usage_failure(UsageError(
            f"`python -m training {argv[0]}` moved: run `python -m experiments {argv[0]}` "
            "with the same options."))
    # Each subcommand is imported only when used: evaluate needs the
    # attack libraries, train does not.
    return dispatch(argv, "python -m training", USAGE,
                    {"train": "training.train", "evaluate": "training.evaluate"})


if __name__ == "__main__":
    sys.exit(main())
