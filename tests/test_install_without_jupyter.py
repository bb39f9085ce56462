"""A server install (`pip install securechat`, no extras) has no Jupyter and still serves.

The package is installed for real, from a copy of its sources, into a fresh virtual
environment; every check runs that environment's Python from a folder outside the
repository, so nothing is imported from the working tree or from the test's own venv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import requests

from .served import LISTENING, read_line

ROOT = Path(__file__).resolve().parent.parent
JUPYTER = ("ipywidgets", "anywidget", "traitlets", "jupyterlab", "ipykernel")


@dataclass(frozen=True)
class ServerInstall:
    """A venv with securechat installed without extras, and a folder to run it in."""

    python: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment without SECURECHAT_* or PYTHONPATH, plus ``extra``."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SECURECHAT_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run this venv's Python with ``args`` in ``workdir``."""
        return subprocess.run([str(self.python), *args], cwd=self.workdir, env=self.env(**extra),
                              capture_output=True, text=True, timeout=120)


def _unavailable(reason: str) -> NoReturn:
    # A machine without venv/ensurepip cannot run this check; CI must be able to.
    if os.environ.get("CI"):
        pytest.fail(f"cannot create a virtual environment under CI: {reason}")
    pytest.skip(f"cannot create a virtual environment here: {reason}")


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInstall]:
    """Create the venv and `pip install` a copy of the project into it, without extras."""
    base = tmp_path_factory.mktemp("server-install")
    # A copy: building in place would write build/ and *.egg-info into the working tree,
    # where a run on another Python (make test-pythons) may be building at the same time.
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "securechat", source / "securechat",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = base / "venv"
    try:
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        _unavailable(str(e))
    if made.returncode != 0:
        _unavailable(made.stderr.strip().splitlines()[-1] if made.stderr.strip() else
                     f"exit {made.returncode}")
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-input",
                          "--disable-pip-version-check", str(source)],
                         capture_output=True, text=True, timeout=300)
    # From here on a failure is the project's: it is never skipped.
    assert pip.returncode == 0, pip.stdout + pip.stderr
    workdir = base / "cwd"
    workdir.mkdir()
    yield ServerInstall(python, workdir)
    shutil.rmtree(base, ignore_errors=True)


def test_the_install_is_the_venvs_and_has_no_jupyter(install: ServerInstall) -> None:
    done = install.run("-c", (
        "import importlib.metadata as md, json, sys\n"
        "import securechat\n"
        "securechat.create_app, securechat.create_app_from_env, securechat.ChatClient\n"
        "missing = []\n"
        f"for name in {JUPYTER!r}:\n"
        "    try:\n"
        "        md.distribution(name)\n"
        "    except md.PackageNotFoundError:\n"
        "        missing.append(name)\n"
        "print(json.dumps({'file': securechat.__file__, 'missing': missing,\n"
        "    'loaded': sorted(m for m in sys.modules if m.partition('.')[0] in "
        f"{JUPYTER!r})}}))\n"))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    # Imported from the installed copy, not from the repository or the test's venv.
    assert Path(found["file"]).resolve().is_relative_to(install.python.parent.parent.resolve())
    assert found["missing"] == list(JUPYTER)  # no Jupyter distribution at all
    assert found["loaded"] == []


def test_ipywidgets_really_is_absent(install: ServerInstall) -> None:
    for name in ("ipywidgets", "anywidget"):
        done = install.run("-c", f"import {name}")
        assert done.returncode == 1
        assert f"ModuleNotFoundError: No module named '{name}'" in done.stderr


def test_the_widget_says_which_extra_to_install(install: ServerInstall) -> None:
    done = install.run("-c", (
        "import securechat\n"
        "try:\n"
        "    securechat.ChatBox\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
        "else:\n"
        "    print('no error')\n"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImportError securechat.widgets.ChatBox needs ipywidgets")
    assert "pip install 'securechat[notebook]'" in done.stdout


def test_serve_starts_answers_and_stops_on_sigterm(install: ServerInstall) -> None:
    instance = install.workdir.parent / "instance"
    proc = subprocess.Popen(
        [str(install.python), "-m", "securechat", "serve", "--host", "127.0.0.1",
         "--port", "0", "--instance", str(instance)],
        cwd=install.workdir, env=install.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = read_line(proc)
        match = LISTENING.search(line)
        assert match, f"unexpected first line: {line!r}"
        response = requests.get(match.group(1) + "/api/health", timeout=30)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "securechat stopped" in out
    assert "Traceback" not in err


def test_a_bad_setting_refuses_to_start_in_one_line(install: ServerInstall) -> None:
    done = install.run("-m", "securechat", "serve", "--host", "127.0.0.1", "--port", "0",
                       "--instance", str(install.workdir.parent / "refused"),
                       SECURECHAT_KDF_LOG_N="30")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("securechat: refusing to start:")
    assert "KDF_LOG_N" in lines[0]
    assert done.stdout == ""
