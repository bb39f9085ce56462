"""What `make lab` serves, read from the Makefile, so tests cannot drift from it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def make_lab_recipe() -> str:
    """The commands of the Makefile's ``lab`` target, continuation lines joined."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^lab:[^\n]*\n((?:\t[^\n]*\n?)+)", text, re.M)
    assert match, "the Makefile has no lab target"
    return match.group(1)


def make_lab_args() -> list[str]:
    """The arguments ``make lab`` gives ``jupyter lab``."""
    for line in make_lab_recipe().splitlines():
        words = shlex.split(line.strip())
        if len(words) > 1 and words[0].endswith("/jupyter") and words[1] == "lab":
            return words[2:]
    raise AssertionError("the lab target does not run `jupyter lab`")


def make_lab_root() -> Path:
    """The folder ``make lab`` serves (``--ServerApp.root_dir``, relative to the Makefile)."""
    roots = [a.split("=", 1)[1] for a in make_lab_args()
             if a.startswith("--ServerApp.root_dir=")]
    assert len(roots) == 1, "make lab must set --ServerApp.root_dir once"
    return (ROOT / roots[0]).resolve()
