"""Section 11 of the benchmark (many streams) runs tiny and writes well-formed tables.

Shapes and counts only, never a timing: every stream completes through `serve` (one and
two processes, SQLite and, where it runs, PostgreSQL), the one past MAX_STREAMS is a 503
with Retry-After, and the targets are judged.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STREAMS, CLIENTS, SWEEP = 6, (1, 2), (2, 4)


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Every ``### title`` table of a RESULTS.md as rows of cells (header first)."""
    tables: dict[str, list[list[str]]] = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
        assert len({len(r) for r in rows}) == 1, f"{title}: ragged rows"
        tables[title.split(" ", 1)[0]] = [rows[0], *rows[2:]]
    return tables


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    argv = [sys.executable, "-m", "benchmarks", "--sections", "streams", "--streams",
            str(STREAMS), "--stream-words", "3", "--stream-delay", "0.01", "--requests", "4",
            "--send-clients", ",".join(map(str, CLIENTS)), "--send-duration", "20",
            "--stream-sweep", ",".join(map(str, SWEEP)),
            "--output", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=280,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text("utf-8")


def test_every_stream_completes_through_each_server(results: str) -> None:
    tables = _tables(results)
    assert list(tables) == ["Targets", "11a.", "11b.", "11c.", "11d."]
    rows = tables["11a."][1:]
    stores = [r[0] for r in rows]
    assert stores[:2] == ["SQLite", "SQLite"] and set(stores[2:]) <= {"PostgreSQL"}
    assert [r[1] for r in rows] == ["1", "2"] * (len(rows) // 2)
    for row in rows:
        # All streams, all completed, none failed, /api/health never failed.
        assert row[2:5] == [str(STREAMS), str(STREAMS), "0"], row
        assert row[16].startswith("0/"), row
        assert float(row[9].replace(",", "")) > 0 and float(row[11]) >= 1, row
    if len(rows) == 2:  # no PostgreSQL here: the table says so
        assert "PostgreSQL: no server at" in results


def test_send_rows_cover_each_server_and_level(results: str) -> None:
    rows = _tables(results)["11b."][1:]
    servers = [(r[0], r[1]) for r in _tables(results)["11a."][1:]]
    # Each server at each level, its floor measured alongside.
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (store, workers, str(c)) for store, workers in servers for c in CLIENTS]
    assert all(r[7] == "0" and float(r[4]) > 0 for r in rows), rows  # no send failed


def test_beyond_capacity_is_a_503_with_retry_after(results: str) -> None:
    (row,) = _tables(results)["11c."][1:]
    # MAX_STREAMS 2 (a tenth of 6, at least 2), 3 streams: one refused, nothing else.
    assert row[:5] == ["2", "3", "2", "1", "0"], row
    assert row[6].startswith("0/")


def test_the_sweep_runs_each_smaller_count_through_each_server(results: str) -> None:
    rows = _tables(results)["11d."][1:]
    assert [(r[0], r[1]) for r in rows] == [(w, str(n)) for w in ("1", "2") for n in SWEEP]
    for row in rows:
        assert row[2:4] == [row[1], "0"], row  # every stream completed, none failed
        assert float(row[10].replace(",", "")) > 0, row  # serve's CPU per token, measured


def test_targets_are_judged(results: str) -> None:
    rows = _tables(results)["Targets"][1:]
    servers = len(_tables(results)["11a."]) - 1
    assert len(rows) == 1 + servers * (2 + len(CLIENTS))
    assert {r[2] for r in rows} <= {"yes", "**no**"}
    assert rows[0][2] == "yes" and rows[1][2] == "yes"  # refusals; SQLite's streams
