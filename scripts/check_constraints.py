"""Fails when the venv holds a package that constraints.txt does not pin at
its installed version: after `make setup` on a fresh machine (CI), that
means setup.cfg gained a dependency whose version CI did not choose.

Usage: .venv/bin/python scripts/check_constraints.py [constraints.txt]
"""

import importlib.metadata
import re
import sys

# The package itself, and pip's own tools in every venv.
UNPINNED = {"keras-hebb", "setuptools", "wheel"}


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def main(path="constraints.txt"):
    pinned = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pinned[normalized(name)] = version.strip()
    problems = []
    for dist in importlib.metadata.distributions():
        name = normalized(dist.metadata["Name"])
        if name in UNPINNED:
            continue
        if name not in pinned:
            problems.append(f"{name}=={dist.version} is installed but not in {path}")
        elif pinned[name] != dist.version:
            problems.append(f"{name}=={dist.version} is installed but {path} pins {pinned[name]}")
    if problems:
        sys.exit("\n".join(problems) + "\nRun scripts/update_constraints.sh in a venv "
                 "that passes the tests.")
    print(f"{path}: every installed package is pinned at its version")


if __name__ == "__main__":
    main(*sys.argv[1:])
