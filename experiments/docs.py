"""The reports pasted into documents (docs/RESULTS.md, README.md) between
marker lines, headings one level down and links made relative to the
document: `python -m experiments results --docs` and `sweep --docs`."""

import os

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- results-summary:begin -->", "<!-- results-summary:end -->"
SWEEP_BEGIN, SWEEP_END = "<!-- sweep:begin -->", "<!-- sweep:end -->"


def section_markers(section):
    """The begin and end lines of a named results section of a document."""
    return f"<!-- results-{section}:begin -->", f"<!-- results-{section}:end -->"


def embed(doc_path, results_path, section=None):
    """Replaces the part of `doc_path` between the results markers with
    the Markdown of `results_path` (headings one level down, links made
    relative to the document), or between the summary markers with the
    main table and the goals (`summary.md`). With `section`, only between
    that section's markers (`section_markers`). Returns False when the
    document has none of them."""
    with open(doc_path) as f:
        document = f.read()
    done = False
    pairs = ((BEGIN, END, os.path.basename(results_path)),
             (SUMMARY_BEGIN, SUMMARY_END, "summary.md"))
    if section:
        pairs = (section_markers(section) + (os.path.basename(results_path),),)
    for begin, end, name in pairs:
        if begin in document and end in document:
            document = replace_between(document, begin, end, doc_path,
                                os.path.join(os.path.dirname(results_path), name))
            done = True
    if done:
        with open(doc_path, "w") as f:
            f.write(document)
    return done


def replace_between(document, begin, end, doc_path, results_path):
    """`document` with the part between the `begin` and `end` lines
    replaced by the Markdown file `results_path` without its title
    (headings one level down, links made relative to `doc_path`)."""
    with open(results_path) as f:
        generated = f.read()
    prefix = os.path.relpath(os.path.dirname(os.path.abspath(results_path)),
                             os.path.dirname(os.path.abspath(doc_path)))
    lines = []
    for line in generated.splitlines()[1:]:  # its title is the document's
        if line.startswith("#"):
            line = "#" + line
        line = line.replace("the files in this folder", f"the files in `{prefix}/`")
        if line.startswith("![") and "](" in line:
            label, target = line[2:-1].split("](", 1)
            line = f"![{label}]({prefix}/{target})"
        lines.append(line)
    head, rest = document.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return head + begin + "\n" + "\n".join(lines).strip("\n") + "\n" + end + tail


def sweep_markers(section=None):
    """The begin and end lines of a sweep's part of a document (several
    sweeps in one document each have a `section`)."""
    if section is None:
        return SWEEP_BEGIN, SWEEP_END
    return f"<!-- sweep-{section}:begin -->", f"<!-- sweep-{section}:end -->"


def has_markers(doc_path, begin, end):
    """Whether the document exists and has both lines `begin` and `end`."""
    if not os.path.exists(doc_path):
        return False
    with open(doc_path) as f:
        document = f.read()
    return begin in document and end in document


def replace_in_file(doc_path, begin, end, report_path):
    """Replaces the part of the document between `begin` and `end` with the
    Markdown file `report_path` (`replace_between`)."""
    with open(doc_path) as f:
        document = f.read()
    with open(doc_path, "w") as f:
        f.write(replace_between(document, begin, end, doc_path, report_path))
