"""Committed notebooks: executed top to bottom, no unexpected errors, no live secret in an output.

The audit itself is :mod:`securechat.lab.notebook_audit` (its own tests:
``test_notebook_audit.py``); here it runs over every notebook in ``notebooks/``, including
ones added later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from securechat.lab.notebook_audit import (
    error_problems,
    execution_problems,
    scan_notebook,
    widget_state_problems,
)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


# --- the committed notebooks -------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_tutorial_notebooks_are_committed() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01_setup.ipynb", "02_encryption.ipynb", "03_sessions.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_secret_in_committed_outputs(path: Path) -> None:
    assert scan_notebook(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_unexpected_error_output(path: Path) -> None:
    assert error_problems(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_executed_top_to_bottom(path: Path) -> None:
    problems = execution_problems(_load(path))
    assert problems == [], f"re-run it with `make notebooks`: {problems}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_saved_widget_state(path: Path) -> None:
    # A chat box's state is the visible conversation in plain text, outside the encrypted store.
    assert widget_state_problems(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_is_a_valid_notebook(path: Path) -> None:
    nbformat.validate(nbformat.read(path, as_version=4))
