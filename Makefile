# Two commands for a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab refuses to run as root unless told; containers often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test lint notebooks bench clean

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

notebooks: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
