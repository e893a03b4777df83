"""`python -m experiments {demo,results,sweep,batchnorm,front,kept-models} ...`: dispatch to a subcommand."""

import sys

from export.cli import dispatch, prepare_tensorflow

# Before anything imports TensorFlow (a user's choice wins).
prepare_tensorflow()

#: Each subcommand's module (its `main(argv)`), imported only when used.
SUBCOMMANDS = {"demo": "experiments.demo", "results": "experiments.results",
               "sweep": "experiments.sweep", "batchnorm": "experiments.batchnorm",
               "front": "experiments.front", "kept-models": "experiments.kept_models"}
USAGE = """usage: python -m experiments {demo,results,sweep,batchnorm,front,kept-models} [options]

  demo      train, evaluate and export standard + HaH networks on
            Fashion-MNIST, with a report (make demo)
  results   the full experiment: seeds, ablations, full robustness
            suite, a study's report (make results, docs/results/)
  sweep     HaH cost weights scaled x0..x300: where the cost changes
            the network (python -m experiments sweep --help)
  batchnorm do trained models' batch-norm statistics fit clean images?
            (clean accuracy before and after recalibration)
  front     the results front page's figure and tables (docs/RESULTS.md)
            from the studies' committed reports (make results-docs)
  kept-models
            the committed model files a claim rests on, per study
            (--prune deletes the others under results/)"""


def main(argv=None):
    """Runs a subcommand; returns the exit status."""
    return dispatch(argv, "python -m experiments", USAGE, SUBCOMMANDS)


if __name__ == "__main__":
    sys.exit(main())
