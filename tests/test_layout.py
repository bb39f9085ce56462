"""One home per concern: no test module imports from another (shared code is in helpers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.glob("test_*.py"))


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports from, relative ones as ``.name``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
            # `from . import test_x` and `from tests import test_x` name the module itself.
            found.update(f"{base.rstrip('.')}.{alias.name}" for alias in node.names)
    return found


def imports_of_test_modules(source: str) -> set[str]:
    """The imports in ``source`` that name a test module of this folder."""
    return {name for name in imported_modules(source)
            if name.rpartition(".")[2].startswith("test_")}


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_test_module_imports_another(module: Path) -> None:
    assert imports_of_test_modules(module.read_text(encoding="utf-8")) == set()


@pytest.mark.parametrize("source", [
    "from .test_api import assert_error",
    "from tests.test_api import raw",
    "from . import test_api",
    "from tests import test_api",
    "import tests.test_api",
    "from test_api import csrf",
])
def test_the_check_catches_every_spelling(source: str) -> None:
    assert imports_of_test_modules(source), source


def test_the_check_allows_helper_modules() -> None:
    source = ("from .helpers import FAST\nfrom tests.fake_backend import Flaky\n"
              "from securechat.testing import FakeOpenAI\nimport pytest\n")
    assert imports_of_test_modules(source) == set()
