"""`python -m experiments {demo,results,sweep} ...`: dispatch to a subcommand."""

import sys

from export.cli import prepare_tensorflow

# Before anything imports TensorFlow (a user's choice wins).
prepare_tensorflow()

COMMANDS = ("demo", "results", "sweep")
USAGE = """usage: python -m experiments {demo,results,sweep} [options]

  demo      train, evaluate and export standard + HaH networks on
            Fashion-MNIST, with a report (make demo)
  results   the full experiment: seeds, ablations, full robustness
            suite, docs/RESULTS.md's tables (make results)
  sweep     HaH cost weights scaled x0..x300: where the cost changes
            the network (python -m experiments sweep --help)"""


def main(argv=None):
    """Runs a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    # Each subcommand is imported only when used.
    if command == "demo":
        from experiments import demo

        return demo.main(rest)
    if command == "results":
        from experiments import results

        return results.main(rest)
    if command == "sweep":
        from experiments import sweep

        return sweep.main(rest)
    print(f"error: unknown command {command!r}: expected 'demo', 'results' or 'sweep' "
          "(python -m experiments --help).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
