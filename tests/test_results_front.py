"""The results front page (`python -m experiments front`, docs/RESULTS.md):
short, its generated parts up to date with the committed study reports, its
numbers the same as recomputed from the raw run files, README's results
section its first screen, its figure written and reproducible."""

import json
import os
import re

import numpy as np
import pytest

from experiments import docs, front, front_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "RESULTS.md")
README = os.path.join(ROOT, "README.md")


@pytest.fixture(scope="module")
def studies():
    return front.load_studies(ROOT)


def _between(path, name):
    begin, end = docs.section_markers(name)
    with open(path) as f:
        return f.read().split(begin, 1)[1].split(end, 1)[0].strip("\n")


def _row(lines, start):
    return next(line for line in lines if line.startswith(start))


def test_the_front_page_is_short_with_one_figure():
    with open(PAGE) as f:
        text = f.read()
    assert len(text.splitlines()) <= 300
    assert re.findall(r"!\[[^]]*\]\(([^)]+)\)", text) == ["results_front.png"]
    for name in (*front.SECTIONS, front.ANSWER):
        assert all(marker in text for marker in docs.section_markers(name)), name


def test_the_generated_parts_are_what_the_committed_reports_give():
    figure = os.path.join(ROOT, "docs", "results_front.png")
    for name, lines in front.sections(ROOT, figure, PAGE).items():
        assert _between(PAGE, name) == "\n".join(lines), f"run make results-docs ({name})"


def test_readme_results_section_is_the_front_page_first_screen():
    answer = front._relink(front.answer_text(PAGE), PAGE, README)
    assert _between(README, front.ANSWER) == answer.strip("\n")
    assert "[results front page](docs/RESULTS.md)" in answer


def _test_accuracy(folder, run):
    with open(os.path.join(ROOT, "results", folder, "runs", run, "metrics.json")) as f:
        return json.load(f)["final"]["val_accuracy"]


def test_differences_match_the_run_files_seed_by_seed(studies):
    """Test-set differences recomputed from each run's metrics.json."""
    lines = front_tables.difference_lines(studies)
    for first, second, column in (("standard_noise_mix", "standard", "-1.9 ± 0.5"),
                                  ("recipe_noise_mix", "standard_noise_mix", "-2.4 ± 0.1")):
        values = [100 * (_test_accuracy("fashion_mnist_defenses", f"{first}_s{seed}")
                         - _test_accuracy("fashion_mnist_defenses", f"{second}_s{seed}"))
                  for seed in (2022, 2023, 2024)]
        text = f"{np.mean(values):+.1f} ± {np.std(values, ddof=1):.1f}"
        assert text == column
        cells = [c.strip() for c in _row(lines, f"| `{first} - {second}` |").split("|")[1:-1]]
        assert cells[3] == f"**{text}**"  # clear: more than twice its spread
    # The clean difference on the eval images, not the noise column beside it.
    row = _row(lines, "| `recipe_at - standard_at` |").split("|")
    assert row[5].strip() == "-7.5 ± 9.6"


def test_key_networks_carry_their_autoattack_verdict(studies):
    lines = front_tables.key_lines(studies, "results_front.png")
    medium_hah = [c.strip() for c in _row(lines, "| `hah` § | medium |").split("|")[1:-1]]
    assert medium_hah[5:7] == ["22.9 †‡", "20 → 16 (2022)"]
    recipe = [c.strip() for c in _row(lines, "| `hah_no_threshold` | medium |").split("|")[1:-1]]
    assert recipe[5:7] == ["23.4 ± 2.5 ✓", "22 → 20 (2022, 2023)"]
    # The small recipe: no masking sign, and AutoAttack never ran on it.
    small = [c.strip() for c in _row(lines, "| `hah_no_threshold` | small |").split("|")[1:-1]]
    assert small[5:7] == ["33.9 ± 1.3", "-"] and small[-1] == "none"


def test_the_figure_is_written_the_same_twice(studies, tmp_path):
    from experiments import front_plot

    first = front_plot.plot(studies, str(tmp_path / "a.png"))
    second = front_plot.plot(studies, str(tmp_path / "b.png"))
    with open(first, "rb") as a, open(second, "rb") as b:
        assert a.read() == b.read()


def test_a_document_without_markers_is_one_line_error(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# no markers\n")
    assert front.main(["--docs", str(page), "--figure", str(tmp_path / "f.png")]) == 2
    assert "has no '<!-- results-front-answer:begin -->' line" in capsys.readouterr().err


def test_every_family_of_the_front_curves_names_networks_of_its_studies():
    from experiments.results import ABLATIONS

    keys = {s.key for s in front_tables.STUDIES if s.figure}
    for label, members in front_tables.FAMILIES.items():
        assert len(members) >= 2, label
        for study, name in members:
            assert study in keys and (name in ("standard", "hah") or name in ABLATIONS), (
                label, study, name)


def test_a_family_with_an_evaluated_network_gets_a_curve(studies):
    from experiments import front_plot
    from keras_hebb import plots

    _, ax = plots.figure()
    front_plot._curves(ax, studies, ("linf", 0.05))
    evaluated = [label for label, members in front_tables.FAMILIES.items()
                 if any(study in studies and front_tables.runs(studies[study], name)
                        for study, name in members)]
    assert len(evaluated) >= 4
    assert ax.get_legend_handles_labels()[1] == evaluated
