"""`python -m training {train,evaluate} ...`: dispatch to a subcommand."""

import sys

from export._cli import set_tf_environment_defaults

# Before anything imports TensorFlow (a user's choice wins).
set_tf_environment_defaults()

USAGE = """usage: python -m training {train,evaluate,demo,results,sweep} [options]

  train     train a model from a YAML config into a run directory
            (python -m training train --help)
  evaluate  robustness report of trained models
            (python -m training evaluate --help)
  demo      train, evaluate and export standard + HaH networks on
            Fashion-MNIST, with a report (make demo)
  results   the full experiment: seeds, ablations, full robustness
            suite, docs/RESULTS.md's tables (make results)
  sweep     HaH cost weights scaled x0..x300: where the cost changes
            the network (python -m training sweep --help)"""


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
    if command == "demo":
        from training import demo

        return demo.main(rest)
    if command == "results":
        from training import results

        return results.main(rest)
    if command == "sweep":
        from training import sweep

        return sweep.main(rest)
    print(f"error: unknown command {command!r}: expected 'train', 'evaluate', 'demo', 'results' "
          "or 'sweep' "
          "(python -m training --help).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
