"""Every command README.md and docs/ write still runs as written.

Each `python -m ...` and `make ...` in a code block (fenced, or an
indented line starting with python) or in inline code is checked as far
as it can be without doing the work:

- a program of this repository (`training`, `export`, `experiments`,
  `benchmarks.*`) runs in this process up to its argument parser, which
  parses the exact arguments and stops there (a renamed subcommand or
  option fails); a command with placeholders (`...`, `[--opt N]`,
  `demo|results`), or one that leaves out a required argument, has its
  subcommand and each option name checked instead;
- `python -m pytest PATH` needs its paths, any other module must exist,
  and so must the file of `python path/to/script.py`;
- `make TARGET [VAR=value]` runs as `make -n`, and the `python -m`
  commands of its recipe are checked like the docs' own.

docs/history/ is a log of past commands and is not checked.
"""

import argparse
import contextlib
import functools
import glob
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Programs whose arguments are parsed in-process.
PROGRAMS = ("training", "export", "experiments", "benchmarks")
#: Tokens that make a command a pattern rather than one exact command.
PLACEHOLDERS = ("...", "[", "|", "<")
#: Shell operators that end a command.
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}
#: Commands the docs still hold that are known to be wrong (as
#: `command_text` writes them), with where the fix belongs; strict, so an
#: entry whose command works again fails.
KNOWN_DRIFT = {
    "python -m training demo|results|sweep":
        "docs/TRAINING.md says these still forward; they stop with a one-line error "
        "naming `python -m experiments ...` (TRAINING.md's owner rewrites it)",
}

FENCE = re.compile(r"^ {0,3}```[^\n]*\n(.*?)^ {0,3}```", re.M | re.S)
#: Inline code, which may wrap onto the next line (not across a paragraph).
INLINE = re.compile(r"(?<!`)`((?:[^`\n]|\n(?!\s*\n))+)`(?!`)")


# ------------------------------------------------------------- extraction


def _tokens(text):
    """Shell words of one command line, comments dropped."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose
        return text.split()


def commands_in(text):
    """`[(kind, argv)]` in one line of shell: kind `python` with argv
    `[module, *arguments]`, `script` with `[path.py, *arguments]`, or
    `make` with `[target, *VAR=value]`."""
    tokens, found = _tokens(text.replace("\\|", "|")), []
    for i, token in enumerate(tokens):
        rest = tokens[i + 1:]
        end = next((j for j, t in enumerate(rest) if t in OPERATORS), len(rest))
        rest = rest[:end]
        if (os.path.basename(token) in ("python", "python3") and rest[:1] == ["-m"]
                and re.fullmatch(r"[A-Za-z_][\w.]*", rest[1] if rest[1:] else "")):
            found.append(("python", rest[1:]))
        elif os.path.basename(token) in ("python", "python3") and rest[:1] and (
                rest[0].endswith(".py")):
            found.append(("script", rest))
        elif token == "make" and rest and re.fullmatch(r"[a-z][\w.-]*", rest[0]):
            found.append(("make", [rest[0]] + [t for t in rest[1:] if "=" in t]))
    return found


def _logical_lines(code, first):
    """`(line number, line)` of a code block starting on line `first`, a
    line ending in a backslash joined with the next."""
    start, buffer = None, ""
    for offset, line in enumerate(code.split("\n")):
        start = first + offset if start is None else start
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        yield start, buffer + line
        start, buffer = None, ""


def commands_in_markdown(text):
    """`[(line number, kind, argv)]` of the code blocks and inline code of a
    Markdown text."""
    found = []
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        for number, line in _logical_lines(block.group(1), first):
            found += [(number, kind, argv) for kind, argv in commands_in(line)]
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE.finditer(prose):
        number = prose.count("\n", 0, span.start()) + 1
        found += [(number, kind, argv) for kind, argv in commands_in(span.group(1))]
    for number, line in enumerate(prose.split("\n"), 1):
        # An indented code line that starts with python (not prose: a list
        # item's continuation is indented too).
        words = line.split()
        if line.startswith(("    ", "\t")) and words and (
                os.path.basename(words[0]) in ("python", "python3")):
            found += [(number, kind, argv) for kind, argv in commands_in(line)]
    return sorted(found, key=lambda command: command[0])


def documents():
    """README.md and every Markdown file under docs/ but docs/history/,
    relative to the repository root."""
    paths = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    return ["README.md"] + sorted(
        path for path in (os.path.relpath(p, ROOT) for p in paths)
        if not path.startswith(os.path.join("docs", "history", "")))


def documented_commands(paths=None):
    """`[(places, kind, argv)]`, each distinct command once with every
    `path:line` that writes it."""
    places = {}
    for path in paths or documents():
        with open(os.path.join(ROOT, path)) as f:
            text = f.read()
        for number, kind, argv in commands_in_markdown(text):
            places.setdefault((kind, tuple(argv)), []).append(f"{path}:{number}")
    return [(", ".join(where), kind, list(argv)) for (kind, argv), where in places.items()]


# --------------------------------------------------------------- checking


class _Parsed(BaseException):
    """The program reached its argument parser (and, when asked, the parser
    accepted the arguments): raised there, so nothing else runs."""

    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


@contextlib.contextmanager
def _stop_at_parsing(parse):
    """Every `ArgumentParser.parse_args` (or `parse_known_args`) call
    parses (if `parse`), then raises `_Parsed`: the program stops there."""
    parse_args = argparse.ArgumentParser.parse_args
    parse_known_args = argparse.ArgumentParser.parse_known_args
    inside = []  # parse_args calls parse_known_args, then checks the rest

    def stop_after_parse_args(self, args=None, namespace=None):
        if parse:
            inside.append(True)
            try:
                parse_args(self, args, namespace)
            finally:
                inside.pop()
        raise _Parsed(self)

    def stop_after_parse_known_args(self, args=None, namespace=None):
        result = parse_known_args(self, args, namespace) if parse else None
        if inside:
            return result
        raise _Parsed(self)

    argparse.ArgumentParser.parse_args = stop_after_parse_args
    argparse.ArgumentParser.parse_known_args = stop_after_parse_known_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = parse_args
        argparse.ArgumentParser.parse_known_args = parse_known_args


def run_to_parser(argv, parse=True):
    """Runs `python -m argv[0] argv[1:]` in this process until its argument
    parser has parsed `argv[1:]` (or, with `parse=False`, until it reaches
    its parser). Returns `(parser, None)`, or `(None, what went wrong)`."""
    printed, saved = io.StringIO(), sys.argv
    sys.argv = list(argv)
    try:
        with _stop_at_parsing(parse), contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: already imported
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except _Parsed as parsed:
        return parsed.parser, None
    except SystemExit as stop:
        if stop.code in (0, None) and {"-h", "--help"} & set(argv):
            return None, None
        return None, f"exit status {stop.code}: {printed.getvalue().strip()}"
    except Exception as error:  # noqa: BLE001  (any failure is the finding)
        return None, f"{type(error).__name__}: {error} {printed.getvalue().strip()}"
    finally:
        sys.argv = saved
    return None, "ran to the end without parsing its arguments"


def _is_pattern(argv):
    """Whether a command has placeholders (`...`, `[--opt N]`, `<x>`, `a|b`)."""
    return any(t == "..." or t.startswith(("[", "<")) or ("|" in t and "=" not in t)
               for t in argv[1:])


def _option_names(argv):
    """The `--option` names a pattern uses (brackets and values dropped)."""
    names = (t.lstrip("[(").split("=")[0].rstrip("]),") for t in argv)
    return [name for name in names if name.startswith("--")]


def _check_pattern(argv):
    """Problems of a command with placeholders: each `a|b` subcommand and
    each option name must exist."""
    problems = []
    words = argv[1].split("|") if len(argv) > 1 and "|" in argv[1] else [None]
    for word in words:
        prefix = [argv[0]] + ([word] if word else [])
        for token in argv[len(prefix) if word else 1:]:
            if token == "..." or token.startswith(("-", "[", "<")):
                break
            prefix.append(token)
        parser, problem = run_to_parser(prefix, parse=False)
        if problem:
            problems.append(f"{' '.join(prefix)}: {problem}")
            continue
        known = {s for action in parser._actions for s in action.option_strings}
        problems += [f"{parser.prog}: no option {name}" for name in _option_names(argv)
                     if name not in known]
    return problems


def check_python(argv):
    """Problems with `python -m argv[0] argv[1:]` as written (`[]` if none)."""
    module = argv[0]
    if module == "pytest":
        return [f"no test file {path}" for path in argv[1:] if not path.startswith("-")
                and not os.path.exists(os.path.join(ROOT, path.split("::")[0]))]
    if module.split(".")[0] not in PROGRAMS or all(t == "..." for t in argv[1:]):
        # `python -m training` alone names the program.
        return [] if importlib.util.find_spec(module) else [f"no module {module}"]
    if _is_pattern(argv):
        return _check_pattern(argv)
    # A program named with no option (`python -m training evaluate`) names it
    # without its arguments: it must reach its parser; options are parsed.
    has_options = any(t.startswith("-") for t in argv[1:])
    _, problem = run_to_parser(argv, parse=has_options)
    if problem and ((argv[-1].startswith("--") and f"argument {argv[-1]}: expected" in problem)
                    or "the following arguments are required" in problem):
        # `... --option` names the option; a command that leaves out a
        # required argument quotes some of a command's options.
        return _check_pattern(argv)
    return [problem] if problem else []


@functools.cache
def _make_dry_run(argv):
    """`make -n ARGV` in the repository (once per distinct command)."""
    return subprocess.run(["make", "-n", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MAKEFLAGS": ""})


def check_make(argv):
    """Problems with `make argv`: `make -n` must succeed, and the `python -m`
    commands of the recipe it prints must pass `check_python`."""
    result = _make_dry_run(tuple(argv))
    if result.returncode != 0:
        return [f"make -n {' '.join(argv)}: {result.stderr.strip()}"]
    problems = []
    for _, line in _logical_lines(result.stdout, 1):
        for kind, command in commands_in(line):
            if kind == "python":
                problems += [f"recipe `{' '.join(command)}`: {p}" for p in check_python(command)]
    return problems


def check(kind, argv):
    """Problems with one documented command (a script: that it exists)."""
    if kind == "script":
        return [] if os.path.isfile(os.path.join(ROOT, argv[0])) else [f"no file {argv[0]}"]
    return check_python(argv) if kind == "python" else check_make(argv)


def command_text(kind, argv):
    """The command as the docs write it, less any path to python."""
    return " ".join([{"python": "python -m", "script": "python"}.get(kind, kind), *argv])


# ------------------------------------------------------------------ tests

COMMANDS = documented_commands()


def _param(where, kind, argv):
    """One documented command as a test case (known drift: a strict xfail)."""
    command = command_text(kind, argv)
    drift = KNOWN_DRIFT.get(command)
    marks = [pytest.mark.xfail(reason=drift, strict=True)] if drift else []
    return pytest.param(where, kind, argv, id=f"{where.split(',')[0]} {command}"[:120],
                        marks=marks)


@pytest.mark.parametrize("where, kind, argv", [_param(*command) for command in COMMANDS])
def test_a_documented_command_runs_as_written(where, kind, argv):
    problems = check(kind, argv)
    assert not problems, f"{where}: `{command_text(kind, argv)}`:\n" + "\n".join(problems)


def test_the_docs_hold_commands_of_each_program():
    programs = {argv[0].split(".")[0] for _, kind, argv in COMMANDS if kind == "python"}
    assert set(PROGRAMS) <= programs, f"found commands of {sorted(programs)} only"
    assert any(kind == "make" for _, kind, _ in COMMANDS)


PLANTED = """# A doc with mistakes

```bash
python -m training train --config training/configs/fashion_mnist_hah_small.yaml \\
    --out runs/x --no-such-option 3
make no-such-target
```

Then `python -m experiments no-such-command --out x`, or
`python -m export MODEL.keras ... [--no-such-flag N]`, and `python -m no_such_module`.
Fine: `python -m training train --config c.yaml --out runs/y` and `make test`.

    python examples/no_such_example.py
"""


def test_planted_mistakes_in_a_doc_fail():
    found = commands_in_markdown(PLANTED)
    assert [(number, kind, argv[:2]) for number, kind, argv in found] == [
        (4, "python", ["training", "train"]), (6, "make", ["no-such-target"]),
        (9, "python", ["experiments", "no-such-command"]),
        (10, "python", ["export", "MODEL.keras"]), (10, "python", ["no_such_module"]),
        (11, "python", ["training", "train"]), (11, "make", ["test"]),
        (13, "script", ["examples/no_such_example.py"])]
    problems = [check(kind, argv) for _, kind, argv in found]
    assert "unrecognized arguments: --no-such-option 3" in problems[0][0]
    assert "No rule to make target" in problems[1][0]
    assert "unknown command 'no-such-command'" in problems[2][0]
    assert problems[3] == ["python -m export: no option --no-such-flag"]
    assert problems[4] == ["no module no_such_module"]
    assert problems[5:7] == [[], []]
    assert problems[7] == ["no file examples/no_such_example.py"]


#: `make TARGET   # = [(a note)] python -m ...`: a doc spelling out what a
#: target runs, on the same line or the next.
SPELT_OUT = re.compile(r"^make ([\w.-]+) +# =(?: \([^)\n]*\))?[ \n](python -m [^\n]+)$", re.M)


def _recipe_commands(target):
    """The `python -m` commands `make -n TARGET` prints, as token lists."""
    result = _make_dry_run((target,))
    assert result.returncode == 0, result.stderr
    return [["python", "-m", *command] for _, line in _logical_lines(result.stdout, 1)
            for kind, command in commands_in(line) if kind == "python"]


def test_a_make_target_spelt_out_in_the_docs_is_its_recipe():
    spelt = []
    for path in documents():
        with open(os.path.join(ROOT, path)) as f:
            spelt += [(path, *m.groups()) for m in SPELT_OUT.finditer(f.read())]
    assert len(spelt) >= 4, spelt
    for path, target, command in spelt:
        assert _tokens(command) in _recipe_commands(target), (
            f"{path}: `make {target}` is spelt out as `{command}`, which its recipe "
            f"no longer runs: {_recipe_commands(target)}")
