"""The README's "Using the package" snippet runs as printed, and runs again without error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def using_the_package_snippet() -> str:
    """The first Python block of the README's "Using the package" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Using the package\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under 'Using the package'"
    return match.group(1)


def test_the_snippet_runs_twice_in_a_row(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(using_the_package_snippet(), encoding="utf-8")
    workdir = tmp_path / "fresh"  # a reader's empty folder: no instance, no .env
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    for run in (1, 2):
        done = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (run, done.stderr)
        lines = done.stdout.splitlines()
        assert lines == ["Echo: Hello!", f"{run} conversations kept in ./instance"], lines
    assert (workdir / "instance" / "secret_key").is_file()
