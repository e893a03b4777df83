"""`python -m experiments front`: the results front page's figure and tables.

The generated parts of docs/RESULTS.md and its figure, from the committed
study reports:

    python -m experiments front --docs docs/RESULTS.md README.md   # make results-docs

Reads each study's `results/STUDY/results.json` (written by the study's
`python -m experiments results ... --report-only`, so run those first) and
the command each report names (its "Made by" line). Writes:

- the figure (`--figure`, default docs/results_front.png): clean accuracy
  on the eval images against the worst-case robust accuracy at L-inf 0.05
  and at L2 0.5, every evaluated network of every study a point (mean
  over its seeds, bars: their sample standard deviation), AutoAttack's
  verdict at its standard strength on each point where it ran
  (`experiments.results_confirmed`);
- between marker lines of each `--docs` document: the list of studies
  (`front-studies`), the key networks (`front-key`), the key seed-by-seed
  differences (`front-differences`); and, in a document other than the
  front page, the front page's first screen (`front-answer`, copied from
  the first document, links made relative to the second).
"""

import os
import re
import sys

from export.cli import Parser, UsageError, usage_failure
from experiments import docs, front_tables
from experiments.steps import load_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Marker names of the generated parts (`docs.section_markers`).
SECTIONS = ("front-studies", "front-key", "front-differences")
ANSWER = "front-answer"


def load_studies(root=ROOT):
    """`{study key: results.json content}` of the studies with robust
    accuracies (`front_tables.STUDIES`) whose report exists."""
    loaded = {}
    for study in front_tables.STUDIES:
        summary = load_json(os.path.join(root, "results", study.folder, "results.json"))
        if summary is not None and study.figure:
            loaded[study.key] = summary
    return loaded


def made_by(root, study):
    """The command a study's report names as the one that made it."""
    path = os.path.join(root, "results", study.folder, study.report)
    with open(path) as f:
        match = re.search(r"Made by `([^`]+)`", f.read())
    if match is None:
        raise UsageError(f"{path} names no command ('Made by `...`')")
    return match.group(1)


def sections(root, figure_path, doc_path):
    """`{marker name: Markdown}` of the generated parts, links relative to `doc_path`."""
    studies = load_studies(root)
    commands = {s.key: made_by(root, s) for s in front_tables.STUDIES}
    link = os.path.relpath(os.path.join(root, "docs", "results"), os.path.dirname(
        os.path.abspath(doc_path)))
    figure = os.path.relpath(os.path.abspath(figure_path),
                             os.path.dirname(os.path.abspath(doc_path)))
    return {"front-studies": front_tables.study_lines(commands, link),
            "front-key": front_tables.key_lines(studies, figure),
            "front-differences": front_tables.difference_lines(studies)}


def _replace(document, name, text):
    begin, end = docs.section_markers(name)
    head, rest = document.split(begin, 1)
    return head + begin + "\n" + text.strip("\n") + "\n" + end + rest.split(end, 1)[1]


def _relink(text, source_doc, target_doc):
    """`text` of `source_doc` with its relative links and images made
    relative to `target_doc`."""
    source = os.path.dirname(os.path.abspath(source_doc))
    target = os.path.dirname(os.path.abspath(target_doc))

    def fix(match):
        url = match.group(2)
        if re.match(r"^[a-z]+:|^#", url):
            return match.group(0)
        path, _, anchor = url.partition("#")
        moved = os.path.relpath(os.path.join(source, path), target)
        return f"{match.group(1)}({moved}{'#' + anchor if anchor else ''})"
    return re.sub(r"(\]|\]\s)\(([^)\s]+)\)", fix, text)


def answer_text(front_doc):
    """The front page's first screen: its part between the answer markers."""
    begin, end = docs.section_markers(ANSWER)
    with open(front_doc) as f:
        document = f.read()
    if begin not in document or end not in document:
        raise UsageError(f"{front_doc} has no '{begin}' line and its end")
    return document.split(begin, 1)[1].split(end, 1)[0]


def write_docs(paths, root, figure_path):
    """Fills the generated parts of each document in `paths`; the first is
    the front page, whose first screen goes into the others."""
    answer = answer_text(paths[0])
    for path in paths:
        with open(path) as f:
            document = f.read()
        found = False
        for name, lines in sections(root, figure_path, path).items():
            if all(m in document for m in docs.section_markers(name)):
                document, found = _replace(document, name, "\n".join(lines)), True
        if path != paths[0] and all(m in document for m in docs.section_markers(ANSWER)):
            document, found = _replace(document, ANSWER, _relink(answer, paths[0], path)), True
        if not found:
            raise UsageError(f"{path} has none of the front page's marker lines "
                             f"({', '.join(docs.section_markers(SECTIONS[0]))}, ...)")
        with open(path, "w") as f:
            f.write(document)


def _parser():
    parser = Parser(prog="python -m experiments front", description=__doc__.split("\n")[0])
    parser.add_argument("--docs", nargs="+", default=["docs/RESULTS.md"], metavar="DOC.md",
                        help="the front page, then documents that repeat its first "
                        "screen (default: docs/RESULTS.md)")
    parser.add_argument("--figure", default="docs/results_front.png", metavar="PNG",
                        help="the figure's file (default: docs/results_front.png)")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        for path in args.docs:
            if not os.path.exists(path):
                raise UsageError(f"--docs: {path} does not exist")
        answer_text(args.docs[0])  # the front page's markers, before any work
        from experiments import front_plot

        front_plot.plot(load_studies(ROOT), args.figure)
        write_docs(args.docs, ROOT, args.figure)
    except UsageError as error:
        return usage_failure(error)
    print(f"Figure: {args.figure}; generated parts of {', '.join(args.docs)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
