"""The benchmark runs at tiny sizes and writes well-formed tables (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from benchmarks.report import Table, percentile

REPO = Path(__file__).resolve().parents[1]
SIZES = (10, 30)
CLIENTS = (1, 2)


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Every ``### title`` table of a RESULTS.md as rows of cells (header first)."""
    tables: dict[str, list[list[str]]] = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        assert re.fullmatch(r"\|(---\|)+", lines[1]), f"{title}: no separator row"
        rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
        assert len({len(r) for r in rows}) == 1, f"{title}: ragged rows"
        tables[title] = [rows[0], *rows[2:]]
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, bytes]:
    """One tiny run of ``python -m benchmarks``; the results and a notebook before/after."""
    tmp = tmp_path_factory.mktemp("bench")
    notebook = tmp / "tiny.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("print(6 * 7)"))
    nbformat.write(nb, notebook)
    before = notebook.read_bytes()
    out = tmp / "RESULTS.md"
    argv = [sys.executable, "-m", "benchmarks", "--messages", ",".join(map(str, SIZES)),
            "--requests", "4", "--clients", ",".join(map(str, CLIENTS)), "--duration", "20",
            "--page-reps", "2", "--crypto-reps", "5", "--login-reps", "1",
            "--login-concurrency", "2", "--slow-sends", "2",
            # Section 11 (streams) has a smoke test of its own.
            "--sections", "inprocess,http,history,crypto,login,slow,keys,portable,notebooks",
            "--notebooks", str(notebook), "--output", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=280,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text("utf-8"), before, notebook.read_bytes()


def test_machine_is_described(results: tuple[str, bytes, bytes]) -> None:
    machine = results[0].split("## Machine", 1)[1].split("## Results", 1)[0]
    for name in ("date (UTC)", "CPU", "cores", "RAM", "OS", "Python", "packages"):
        assert re.search(rf"^\| {re.escape(name)} \| \S", machine, flags=re.M), name
    assert "securechat 0." in machine and "cryptography" in machine


def test_every_section_has_a_well_formed_table(results: tuple[str, bytes, bytes]) -> None:
    tables = _tables(results[0])
    numbers = [title.split(".")[0] for title in tables]
    assert numbers == ["Targets", "1", "2", "3", "4", "5", "6", "7", "8", "9a", "9b", "10"]
    by_number = {title.split(".")[0]: rows for title, rows in tables.items()}
    # Every measured cell is a positive number (how large is not this test's business).
    for number, columns in {"1": (1, 2, 3), "3": (2, 3, 4), "4": (1, 2), "5": (1, 2),
                            "6": (1,)}.items():
        for row in by_number[number][1:]:
            assert all(_number(row[c]) > 0 for c in columns), (number, row)
    # "× raw" compares like with like; the per-request row has nothing raw to compare with.
    assert [r[3] == "–" for r in by_number["4"][1:]] == [False] * 6 + [True]
    assert len(by_number["1"]) == 1 + 4
    assert [(int(r[0]), r[1]) for r in by_number["3"][1:]] == [
        (s, page) for s in SIZES for page in ("newest", "middle")]
    assert "Argon2id m=19 MiB, t=2, p=1" in by_number["5"][1][0]
    # Slow readers: 0, 1, 10 and 50 stalled clients; the server's files stay its database's.
    assert [int(r[0]) for r in by_number["8"][1:]] == [0, 1, 10, 50]
    assert all("securechat.sqlite3" in r[4] and "#" not in r[4] for r in by_number["8"][1:])
    # Your keys: a password change at each size touches no message row; each KDF's logins.
    assert [(int(r[0]), r[4]) for r in by_number["9a"][1:]] == [(s, "0") for s in SIZES]
    assert all(_number(r[c]) > 0 for r in by_number["9a"][1:] for c in (1, 2, 3))
    assert [r[0].split()[0] for r in by_number["9b"][1:]] == ["Argon2id", "scrypt", "Argon2id,"]
    assert all(_number(r[c]) > 0 for r in by_number["9b"][1:] for c in (1, 2, 6, 7))
    # Your history, portable: three exports, then search paged, found, and unbounded.
    rows = by_number["10"][1:]
    assert [r[0].split(",")[0] for r in rows] == ["export"] * 3 + [
        "import of the JSON export into another account", "search found nowhere",
        "search found everywhere", "search found nowhere"]
    assert all(_number(r[c]) > 0 for r in rows[:3] for c in (2, 5, 6))
    assert all(_number(r[c]) > 0 for r in rows[3:4] for c in (2, 5))
    assert all(_number(r[c]) > 0 for r in rows[4:] for c in (1, 2, 3, 4))
    assert rows[6][1] == "1"  # the unbounded search is one request


def test_http_rows_cover_every_level_without_errors(results: tuple[str, bytes, bytes]) -> None:
    rows = next(r for t, r in _tables(results[0]).items() if t.startswith("2."))[1:]
    assert [(r[0].split()[0], int(r[1])) for r in rows] == [
        (server, c) for server in ("plain", "securechat") for c in CLIENTS]
    for row in rows:
        assert int(row[2]) == 4 and int(row[3]) == 0, row  # all requests done, none failed
    assert "securechat yes" in results[0]  # the server stopped cleanly on SIGTERM


def test_targets_are_judged(results: tuple[str, bytes, bytes]) -> None:
    rows = _tables(results[0])["Targets"][1:]
    # Pages (2), memory (5), search and password change: section 1's ratio is no target.
    assert len(rows) == 9
    assert not any(r[0].startswith("in-process") for r in rows)
    assert {r[2] for r in rows} <= {"yes", "**no**"}


def test_notebooks_run_but_are_not_modified(results: tuple[str, bytes, bytes]) -> None:
    text, before, after = results
    rows = next(r for t, r in _tables(text).items() if t.startswith("7."))[1:]
    assert [(r[0], r[2]) for r in rows] == [("tiny.ipynb", "ok"), ("all notebooks", "ok")]
    assert after == before


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    table = Table("t", ["a", "b"])
    table.add(1, 2.5)
    with pytest.raises(ValueError, match="cells"):
        table.add(1)
    assert table.markdown().splitlines()[2:5] == ["| a | b |", "|---|---|", "| 1 | 2.50 |"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) != percentile([], 50)  # NaN: nothing was measured
