"""docs/ARCHITECTURE.md's import rules, checked.

- Imports go downwards and a private (`_`) module is imported only inside
  its own package: import-linter's contracts in `.importlinter`.
- No package imports a private name of another (a function or attribute,
  which import-linter does not see), and every private Keras, TensorFlow or
  LiteRT name is used only in `keras_hebb/_compat.py`: read here from each
  file's syntax tree.

Each check is also run on a planted mistake, so a check that can no longer
fail shows.
"""

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("keras_hebb", "export", "training", "experiments", "benchmarks")
#: Where the code lives (the programs and examples are not packages of each other).
FOLDERS = PACKAGES + ("examples",)
COMPAT = os.path.join("keras_hebb", "_compat.py")
#: Distributions whose private names belong in `_compat` only.
UPSTREAM = ("keras", "tensorflow", "ai_edge_litert", "jax", "jaxlib")
#: Private upstream modules named without a `_` component.
PRIVATE_UPSTREAM_MODULES = ("keras.src", "tensorflow.python", "tensorflow.core")
#: Files allowed to read another package's private name, with the reason
#: (the same benchmarks as `.importlinter`'s ignored imports).
PRIVATE_NAME_EXCEPTIONS = {
    (os.path.join("benchmarks", "profile_hah.py"),
     "keras_hebb._selection._native_selection_available"):
        "its 'top_k selection' variant replaces it: no public switch selects the top_k path",
}


def _lint_imports(cwd):
    """Runs `lint-imports` in `cwd`; returns (exit status, output)."""
    command = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(command):
        pytest.fail("lint-imports is not installed: run `make setup` (the dev extra)")
    result = subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_import_linter_contracts_are_kept():
    status, output = _lint_imports(ROOT)
    assert status == 0, output
    assert "0 broken" in output, output


def test_import_linter_finds_a_planted_upward_import(tmp_path):
    for package in PACKAGES:
        shutil.copytree(os.path.join(ROOT, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.cc"))
    shutil.copy(os.path.join(ROOT, ".importlinter"), tmp_path)
    with open(tmp_path / "export" / "__init__.py", "a") as f:
        f.write("\nimport training.config  # planted\n")
    status, output = _lint_imports(tmp_path)
    assert status == 1, output
    assert "export is not allowed to import training" in output, output


def _python_files():
    for folder in FOLDERS:
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    yield os.path.relpath(path, ROOT)


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _is_our_module(dotted):
    return dotted.split(".")[0] in PACKAGES


def _is_module_file(dotted):
    """Whether `dotted` (one of ours) is a module or package file here."""
    path = os.path.join(ROOT, *dotted.split("."))
    return os.path.isdir(path) or os.path.isfile(path + ".py")


def _imported_modules(tree, package):
    """`{alias: dotted module}` of the modules of other packages that `tree` imports."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and _is_our_module(alias.name):
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _is_our_module(dotted) and _is_module_file(dotted):
                    aliases[alias.asname or alias.name] = dotted
    return {alias: dotted for alias, dotted in aliases.items()
            if dotted.split(".")[0] != package}


def private_names_of_other_packages(source, package):
    """`[(line, text)]`: each private name of another of our packages that
    `source` (a file of `package`) imports or reads; private modules are
    left to import-linter's `private_modules` contract."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_our_module(node.module) and node.module.split(".")[0] != package:
                found += [(node.lineno, f"from {node.module} import {alias.name}")
                          for alias in node.names if _is_private(alias.name)
                          and not _is_module_file(f"{node.module}.{alias.name}")]
    modules = _imported_modules(tree, package)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append((node.lineno, f"{modules[node.value.id]}.{node.attr}"))
    return sorted(found)


def _our_private_names():
    """Every private name our code defines: functions, classes, attributes
    and variables it assigns, module files."""
    names = set()
    for path in _python_files():
        names.add(os.path.splitext(os.path.basename(path))[0])
        with open(os.path.join(ROOT, path)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {name for name in names if _is_private(name)}


def _upstream_private_import(node):
    """The text of a private upstream import in `node` (an import statement,
    `importlib.import_module("...")` or an attribute chain such as
    `keras.src.losses`), else `None`."""
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    elif (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")
            and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        modules = [node.args[0].value]
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        modules = [ast.unparse(node)]  # `keras.src`: the start of a chain
    else:
        return None
    for dotted in modules:
        parts = dotted.split(".")
        if parts[0] in UPSTREAM and (
                any(_is_private(part) for part in parts)
                or any(dotted == m or dotted.startswith(m + ".")
                       for m in PRIVATE_UPSTREAM_MODULES)):
            return f"import of {dotted}"
    return None


def private_upstream_names(source, ours):
    """`[(line, text)]`: private Keras/TensorFlow/LiteRT names `source`
    imports or reads; a private attribute is upstream unless `ours` (the
    private names our code defines) has it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        text = _upstream_private_import(node)
        if text:
            found.append((node.lineno, text))
        elif (isinstance(node, ast.Attribute) and _is_private(node.attr)
                and node.attr not in ours
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append((node.lineno, f"attribute {node.attr}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)
                and node.args[1].value not in ours):
            found.append((node.lineno, f"{node.func.id} of {node.args[1].value}"))
    return found


def _findings(check):
    """`["path:line: text"]` of `check(path, source)` over our files."""
    out = []
    for path in _python_files():
        with open(os.path.join(ROOT, path)) as f:
            source = f.read()
        out += [f"{path}:{line}: {text}" for line, text in check(path, source)]
    return out


def test_no_package_reads_a_private_name_of_another():
    found = _findings(lambda path, source: [
        (line, text) for line, text in private_names_of_other_packages(
            source, path.split(os.sep)[0]) if (path, text) not in PRIVATE_NAME_EXCEPTIONS])
    assert not found, "private names of another package:\n" + "\n".join(found)


def test_private_upstream_names_only_in_compat():
    ours = _our_private_names()
    found = _findings(lambda path, source: [] if path == COMPAT else
                      private_upstream_names(source, ours))
    assert not found, ("private Keras/TensorFlow/LiteRT names outside keras_hebb/_compat.py "
                       "(add a shim there):\n" + "\n".join(found))


def test_the_private_name_checks_find_planted_mistakes():
    planted = ("from tensorflow.python.eager import context\n"
               "import keras.src.losses\n"
               "ctx = context.context()\n"
               "seed = ctx._seed\n"
               "rng = getattr(ctx, '_rng')\n"
               "own = self._anything\n"
               "trainer = importlib.import_module('keras.src.backend.tensorflow.trainer')\n"
               "loss = keras.src.losses.Loss\n")
    assert [line for line, _ in private_upstream_names(planted, set())] == [1, 2, 4, 5, 7, 8]
    planted = ("from keras_hebb.robustness.attacks import _batches\n"
               "from keras_hebb import _selection, runtime\n"
               "runtime._hidden()\n")
    assert private_names_of_other_packages(planted, "experiments") == [
        (1, "from keras_hebb.robustness.attacks import _batches"),
        (3, "keras_hebb.runtime._hidden")]
    assert private_names_of_other_packages(planted, "keras_hebb") == []
