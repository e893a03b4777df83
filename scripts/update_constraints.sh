#!/usr/bin/env bash
# Rewrites constraints.txt from the packages installed in .venv (after
# trying new versions there and running the tests): the exact versions that
# `make setup` and CI install. Users get setup.cfg's ranges instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
{
  echo "# The exact versions tested together (make setup, CI): Python 3.11, Linux x86_64."
  echo "# pip install -c constraints.txt -e \".[dev,tensorflow-cpu,jax]\""
  echo "# Users install keras-hebb with setup.cfg's ranges; this file only pins CI."
  echo "# Regenerated from .venv by scripts/update_constraints.sh."
  "$PY" -m pip freeze --all --exclude-editable \
    | grep -v -E '^(setuptools|wheel)==' \
    | grep -v -E '^#' \
    | grep -v -i -E '^keras[-_]hebb([=@ ]|$)'
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pinned packages"
