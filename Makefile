# Two commands for a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab refuses to run as root unless told; containers often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test lint notebooks bench clean test-pythons wheel

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The repository is the root, so the notebooks' links to ../README.md, ../SECURITY.md and the
# package's source files open; the first notebook opens at start.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/01_setup.ipynb --ServerApp.root_dir=. --ServerApp.ip=127.0.0.1 \
		$(ROOT_FLAG)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy securechat

test: lint
	$(BIN)/python -m pytest tests notebooks --nbval --nbval-sanitize-with notebooks/sanitize.cfg

# The package claims Python >= 3.10: every other 3.10-3.13 found here gets its own venv
# (.venv-3.X) and runs the tests that need no browser. pyenv's builds first, else a
# pythonX.Y on PATH that runs (a pyenv shim of an unselected version exists but fails).
SUPPORTED := 3.10 3.11 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
PY_JOBS ?= 3  # one per version: each run waits on servers more than it computes
python_for = $(or $(lastword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))),$\
	$(shell python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null))
DEFAULT_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
OTHER_VERSIONS = $(strip $(foreach v,$(filter-out $(DEFAULT_VERSION),$(SUPPORTED)),$\
	$(if $(call python_for,$(v)),$(v))))
BROWSER_TESTS := $(wildcard tests/test_browser_*.py)
# The benchmarks' smoke tests check the benchmark scripts, not the package: one Python is
# enough for them too.
ONE_PYTHON_TESTS := $(BROWSER_TESTS) $(wildcard tests/test_benchmarks_*smoke.py)
WHEEL_DIR := build/wheel

# One wheel of the working tree, built once per run and installed into each version's
# venv: no venv builds in the tree (where builds would collide), so all install at once.
test-pythons:
	@echo "Other Pythons found: $(or $(OTHER_VERSIONS),none) (default $(DEFAULT_VERSION))"
	$(if $(OTHER_VERSIONS),$(MAKE) -k -j$(PY_JOBS) --output-sync=target $\
		$(foreach v,$(OTHER_VERSIONS),test-python-$(v)))

wheel:
	rm -rf $(WHEEL_DIR)
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_DIR) .

.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml | wheel
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet "$$(ls $(WHEEL_DIR)/securechat-*.whl)[dev]"
	touch $@

# The tests import the tree (pytest's pythonpath); the wheel, reinstalled from this run's
# tree, is what their `python -m securechat` subprocesses run. The PostgreSQL runs of the
# contract stay with `make test` (one Python is enough for the database; DESIGN.md), as do
# the browser tests and the benchmarks' smoke tests.
test-python-%: .venv-%/.installed wheel
	.venv-$*/bin/python -m pip install --quiet --no-deps --force-reinstall $(WHEEL_DIR)/securechat-*.whl
	@echo "== Python $* ($$(.venv-$*/bin/python -c 'import sys; print(sys.version.split()[0])'))"
	.venv-$*/bin/python -m pytest tests -p no:cacheprovider -k "not postgres" \
		$(addprefix --ignore=,$(ONE_PYTHON_TESTS))

notebooks: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(VENV)-3.* .pytest_cache .ruff_cache .mypy_cache .hypothesis
