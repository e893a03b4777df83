# The two commands: `make demo` (the main job) and `make test`.
# Both set everything up on a fresh Debian machine (system package, .venv).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# oneDNN doubles TensorFlow's CPU speed on this hardware (docs/PERFORMANCE).
export TF_ENABLE_ONEDNN_OPTS ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg scripts/install_system_packages.sh
	bash scripts/install_system_packages.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# tensorflow-serving-api pins the full tensorflow package: protos only.
	$(PY) -m pip install --quiet --no-deps tensorflow-serving-api==2.21.0
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Train standard + HaH on Fashion-MNIST, evaluate, export, report (runs/demo).
demo: setup
	$(PY) -m training demo --out runs/demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
