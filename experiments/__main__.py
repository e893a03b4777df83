"""`python -m experiments {demo,results,sweep} ...`: dispatch to a subcommand."""

import sys

from export.cli import dispatch, prepare_tensorflow

# Before anything imports TensorFlow (a user's choice wins).
prepare_tensorflow()

#: Each subcommand's module (its `main(argv)`), imported only when used.
SUBCOMMANDS = {"demo": "experiments.demo", "results": "experiments.results",
               "sweep": "experiments.sweep"}
USAGE = """usage: python -m experiments {demo,results,sweep} [options]

  demo      train, evaluate and export standard + HaH networks on
            Fashion-MNIST, with a report (make demo)
  results   the full experiment: seeds, ablations, full robustness
            suite, docs/RESULTS.md's tables (make results)
  sweep     HaH cost weights scaled x0..x300: where the cost changes
            the network (python -m experiments sweep --help)"""


def main(argv=None):
    """Runs a subcommand; returns the exit status."""
    return dispatch(argv, "python -m experiments", USAGE, SUBCOMMANDS)


if __name__ == "__main__":
    sys.exit(main())
