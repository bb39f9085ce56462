"""Time executing each tutorial notebook in a fresh kernel, into a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .report import Table
from .serve import clean_env


def run_notebooks(paths: Sequence[Path], out_dir: Path, timeout: float = 300) -> Table:
    """Execute every notebook with nbconvert (outputs go to ``out_dir``, never in place)."""
    table = Table("7. Notebooks (jupyter nbconvert --execute, fresh kernel each)",
                  ["notebook", "seconds", "status"])
    total = 0.0
    for path in paths:
        argv = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                "--output-dir", str(out_dir), f"--ExecutePreprocessor.timeout={int(timeout)}",
                str(path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=path.parent, env=clean_env(), capture_output=True,
                                  text=True, timeout=timeout + 60, check=False)
            status = "ok" if done.returncode == 0 else _failure(done.stderr)
        except subprocess.TimeoutExpired:
            status = "timed out"
        seconds = time.perf_counter() - start
        total += seconds
        table.add(path.name, seconds, status)
    table.add("all notebooks", total, "ok" if all(r[2] == "ok" for r in table.rows) else
              "failures")
    table.notes.append("Wall time per notebook, kernel start-up included; the committed "
                       "notebooks are not modified." if paths else "No notebook found.")
    return table


def _failure(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    # The last line of nbconvert's report names the exception; keep the table one line high.
    return "failed: " + (lines[-1][:120] if lines else "no output")
