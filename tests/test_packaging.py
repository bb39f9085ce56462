"""Packaging promises: pins, conda parity, and nothing stateful at import time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check itself is version-free

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQ = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(>=\s*([0-9.]+))?")
# Where conda-forge's name differs from PyPI's ("redis" there is the server itself).
CONDA_NAMES = {"redis": "redis-py"}


def requirements() -> dict[str, str | None]:
    """Every pip requirement of the project (runtime and extras) → its lower bound."""
    found: dict[str, str | None] = {}
    groups = [
        PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"].values(),
    ]
    for group in groups:
        for spec in group:
            match = REQ.match(spec)
            assert match, spec
            name = match.group(1).lower()
            if name != "securechat":
                found[name] = match.group(4)
    return found


def conda_requirements() -> dict[str, str | None]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, str | None] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            match = REQ.match(dep)
            assert match, dep
            found[match.group(1).lower()] = match.group(4)
    return found


def test_environment_yml_matches_pyproject() -> None:
    conda = conda_requirements()
    for pypi_name, bound in requirements().items():
        name = CONDA_NAMES.get(pypi_name, pypi_name)
        assert name in conda, f"{name} missing from environment.yml"
        assert conda[name] == bound, f"{name}: pyproject >={bound}, environment.yml >={conda[name]}"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    assert {"pip": ["-e ."]} in env["dependencies"]
    assert conda["python"] == PYPROJECT["project"]["requires-python"].removeprefix(">=")


@pytest.mark.parametrize(
    "name,minimum", [("flask", "3.1.3"), ("werkzeug", "3.1"), ("cryptography", "44")]
)
def test_minimum_pins(name: str, minimum: str) -> None:
    bound = requirements()[name]
    assert bound is not None
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(bound) >= as_tuple(minimum)


def test_pytest_turns_warnings_into_errors() -> None:
    assert "error" in PYPROJECT["tool"]["pytest"]["ini_options"]["filterwarnings"]


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    """Importing every module starts no thread, opens no file, creates no folder."""
    tmp_path = tmp_path / "empty"
    tmp_path.mkdir()
    code = """
import os, sys, threading, importlib, pkgutil
before = set(os.listdir('.'))
import securechat
for mod in pkgutil.walk_packages(securechat.__path__, 'securechat.'):
    if mod.name != 'securechat.__main__':
        importlib.import_module(mod.name)
import logging
assert threading.active_count() == 1, threading.enumerate()
assert set(os.listdir('.')) == before, set(os.listdir('.')) - before
assert logging.getLogger().handlers == [], logging.getLogger().handlers
assert not logging.getLogger('securechat').handlers
from flask import Flask
for name, mod in list(sys.modules.items()):
    if name.startswith('securechat'):
        for value in vars(mod).values():
            assert not isinstance(value, Flask), name
print('clean')
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"
    assert list(tmp_path.iterdir()) == []


def test_no_secret_literal_in_package() -> None:
    """No SECRET_KEY assigned a literal in the package (the vulnerable example aside)."""
    pattern = re.compile(r"SECRET_KEY[\"']?\s*[:=]\s*[\"'][^\"']+[\"']")
    for path in (ROOT / "securechat").rglob("*.py"):
        if path.name == "vulnerable.py":
            continue
        assert not pattern.search(path.read_text()), path
