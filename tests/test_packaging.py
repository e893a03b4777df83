"""The wheel a user installs, checked the way a user gets it (marked `wheel`:
these tests build the wheel and fresh virtualenvs, ~2-3 min on 2 cores).

The wheel is built from a copy of what it ships (`pip wheel --no-deps`),
then installed into a fresh venv with `constraints.txt` and the
`tensorflow-cpu` and `export` extras; with its site-packages mounted
read-only (as a system install is), `python -m keras_hebb._native` builds
the native ops into `$XDG_CACHE_HOME/keras_hebb` and `wheel_smoke.py` fits
`hah_vgg_small`, reloads it and exports a SavedModel and a TFLite file. A
second venv holds a stand-in `tensorflow` distribution (the real wheel
weighs over 600 MB): `pip install --dry-run --report` shows that installing
keras-hebb beside it installs no second TensorFlow.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
# What the wheel is built from (the sdist's content); build artifacts left
# in the checkout (build/, *.egg-info, compiled ops) stay out of it.
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "keras_hebb")
TENSORFLOW_WHEELS = {"tensorflow", "tensorflow-cpu", "tensorflow-intel",
                     "tensorflow-macos", "tensorflow-tpu"}


def _run(command, **kwargs):
    """Runs `command`; on failure the assertion shows its output."""
    result = subprocess.run([str(c) for c in command], capture_output=True,
                            text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _pip(*args, python=None):
    """This venv's pip, acting on `python`'s environment when given (a
    venv made `--without-pip` needs no pip of its own)."""
    target = ("--python", python) if python else ()
    return _run([sys.executable, "-m", "pip", *target, *args])


def _normalized(name):
    return name.lower().replace("_", "-").replace(".", "-")


def _fresh_venv(path):
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    return Path(path) / "bin" / "python"


def _site_packages(python):
    return Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.so", "*.partial"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", dist, source)
    (path,) = dist.glob("keras_hebb-*.whl")
    print(f"built {path.name}")
    return path


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def test_wheel_holds_the_library_and_its_op_source_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"keras_hebb"}  # no top-level `training`, `export`, `tests`
    assert "keras_hebb/_native/hah_ops.cc" in names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]


def test_requirements_are_ranges_and_tensorflow_only_an_extra(wheel):
    requires = [line.split(":", 1)[1].strip() for line in _metadata(wheel).splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires, "the wheel declares no requirements"
    specifiers = [r.split(";")[0] for r in requires]  # without `; extra == "..."`
    assert not [s for s in specifiers if "==" in s], specifiers
    core = [r for r in requires if "extra ==" not in r]
    names = {_normalized(re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0]) for r in core}
    assert "keras" in names
    assert not names & TENSORFLOW_WHEELS, core
    extras = {line.split(":", 1)[1].strip() for line in _metadata(wheel).splitlines()
              if line.startswith("Provides-Extra:")}
    assert {"tensorflow", "tensorflow-cpu", "and-cuda", "jax", "data", "robustness",
            "export", "training", "all", "dev"} <= extras


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory):
    python = _fresh_venv(tmp_path_factory.mktemp("clean") / "venv")
    # --no-compile: no .pyc for TensorFlow's thousands of modules (time).
    _pip("install", "--quiet", "--no-compile", "-c", CONSTRAINTS,
         f"{wheel}[tensorflow-cpu,export]", python=python)
    return python


def _read_only_mounts_work(directory):
    """Whether `unshare` can give a command a read-only view of `directory`
    (Linux mount namespaces; as root or with user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    script = f'mount --bind "{directory}" "{directory}" && mount -o remount,bind,ro "{directory}"'
    result = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script],
                            capture_output=True)
    return result.returncode == 0


def test_wheel_installs_builds_its_ops_fits_and_exports_in_a_clean_venv(
        clean_venv, tmp_path):
    site_packages = _site_packages(clean_venv)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_HEBB_NATIVE")}
    env.update(XDG_CACHE_HOME=str(cache), KERAS_BACKEND="tensorflow",
               KERAS_HOME=str(tmp_path / "keras"))
    steps = (f'"{clean_venv}" -m keras_hebb._native && '
             f'"{clean_venv}" "{ROOT / "tests" / "wheel_smoke.py"}" "{out}"')
    read_only = _read_only_mounts_work(site_packages)
    if read_only:
        steps = (f'mount --bind "{site_packages}" "{site_packages}" && '
                 f'mount -o remount,bind,ro "{site_packages}" && {steps}')
        command = ["unshare", "--mount", "--map-root-user", "sh", "-c", steps]
    else:
        command = ["sh", "-c", steps]
    result = _run(command, cwd=tmp_path, env=env)  # cwd: not the checkout
    print(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[-1] == "ok"
    assert any(line.startswith("import: ") and str(site_packages) in line for line in lines)
    built = list((cache / "keras_hebb").glob("_hah_ops_tf*.so"))
    in_package = list((site_packages / "keras_hebb" / "_native").glob("*.so"))
    if read_only:
        # A read-only install: the ops go to the user's cache and are found there.
        assert len(built) == 1 and not in_package
        assert str(built[0]) in lines
    else:
        assert len(in_package) == 1


def test_installing_beside_tensorflow_installs_no_second_tensorflow(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    # A stand-in for the user's `tensorflow` (GPU) wheel: pip sees it installed.
    info = _site_packages(python) / "tensorflow-2.21.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorflow\nVersion: 2.21.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")

    def planned(requirement):
        report = tmp_path / "report.json"
        _pip("install", "--quiet", "--dry-run", "--report", report,
             "-c", CONSTRAINTS, requirement, python=python)
        return {_normalized(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}

    for extras in ("", "[tensorflow,all]"):
        names = planned(f"{wheel}{extras}")
        print(f"keras-hebb{extras} beside tensorflow 2.21.0 would install "
              f"{len(names)} packages: {', '.join(sorted(names))}")
        assert "keras-hebb" in names and "keras" in names
        assert not set(names) & TENSORFLOW_WHEELS, extras
    # The check sees a TensorFlow wheel when one is asked for.
    assert "tensorflow-cpu" in planned(f"{wheel}[tensorflow-cpu]")
