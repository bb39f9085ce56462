"""The storage module: schema versions and the connection pool."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import pytest

from securechat import store
from securechat.errors import ConfigError


def test_migrate_from_empty_and_is_idempotent(tmp_path: Path) -> None:
    conn = store.connect(str(tmp_path / "db.sqlite3"))
    assert store.migrate(conn) == 0
    assert store.migrate(conn) == store.SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    conn.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    conn = store.connect(str(tmp_path / "db.sqlite3"))
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer"):
        store.migrate(conn)
    conn.close()


def test_pool_reuses_connections_and_bounds_idle_ones(tmp_path: Path) -> None:
    pool = store.Pool(str(tmp_path / "db.sqlite3"), size=2)
    a, b, c = pool.take(), pool.take(), pool.take()
    assert len({id(a), id(b), id(c)}) == 3
    for conn in (a, b, c):
        pool.give(conn)
    reused = pool.take()
    assert reused is b  # reused, not reopened
    pool.give(reused)
    with pytest.raises(sqlite3.ProgrammingError):
        c.execute("SELECT 1")  # the one beyond the pool's size was closed
    pool.close()
    for conn in (a, b):
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_pool_rolls_back_a_half_done_transaction(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    pool = store.Pool(path)
    conn = pool.take()
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    pool.give(conn)
    assert not conn.in_transaction
    again = pool.take()
    assert again.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    pool.give(again)  # the pool closes only the connections it holds
    pool.close()


def test_dropped_pool_closes_its_connections(tmp_path: Path) -> None:
    import gc

    pool = store.Pool(str(tmp_path / "db.sqlite3"))
    conn = pool.take()
    pool.give(conn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del pool
        gc.collect()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


# --- migrations: .sql files split by SQLite's own idea of a complete statement ------------


def test_statements_are_split_where_sqlite_says_they_end() -> None:
    from securechat.store.migrate import statements

    script = """-- a comment; with a semicolon
CREATE TABLE t (a TEXT DEFAULT 'x;y');
INSERT INTO t VALUES ('semi;colon');
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    INSERT INTO t VALUES ('inside; the trigger');
END;
"""
    found = statements(script)
    assert len(found) == 3
    assert found[1] == "INSERT INTO t VALUES ('semi;colon');"
    assert found[2].startswith("CREATE TRIGGER") and found[2].endswith("END;")
    db = sqlite3.connect(":memory:")
    for statement in found:
        db.execute(statement)
    db.execute("INSERT INTO t VALUES ('z')")
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3
    db.close()


def test_an_unfinished_statement_is_an_error() -> None:
    from securechat.store.migrate import statements

    with pytest.raises(ValueError, match="incomplete"):
        statements("CREATE TABLE t (a TEXT);\nINSERT INTO t VALUES ('never closed")


def test_migrations_are_numbered_from_one_and_all_apply() -> None:
    from securechat.store.migrate import SCHEMA_VERSION, scripts

    assert len(scripts()) == SCHEMA_VERSION >= 3
    db = sqlite3.connect(":memory:")
    assert store.migrate(db) == 0 and store.migrate(db) == SCHEMA_VERSION
    db.close()
