"""The schema's versions: ``migrations/NNNN_name.sql`` files, applied in order, in one transaction.

Each file takes the schema from version N-1 to N. One numbering serves both databases:
where PostgreSQL needs other DDL (``bytea`` for ``BLOB``, ``double precision`` for
``REAL``, ``COLLATE "C"`` so text sorts as in SQLite), ``migrations/postgres/`` holds a
file of the same name, used instead; a file without one serves both. To add version N:
``migrations/NNNN_name.sql``, plus ``migrations/postgres/NNNN_name.sql`` when its DDL
differs (``tests/test_store_portable.py`` says when it must).

SQLite records the version in ``PRAGMA user_version`` and splits a script with its own
:func:`sqlite3.complete_statement`, so a ``;`` inside a string, a comment or a trigger body
does not end a statement. PostgreSQL records it in the ``securechat_schema`` table and runs
each script whole; concurrent starts queue on an advisory lock, so one process migrates
and the others find the work done.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from typing import Any

from ..errors import ConfigError

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
DIALECTS = ("sqlite", "postgres")
# pg_advisory_xact_lock's key for migrations: any constant no other code of a shared
# database uses (the bytes of "securech" as a signed 64-bit integer).
LOCK_KEY = int.from_bytes(b"securech", "big", signed=True)


def _files(folder: Any) -> dict[int, Any]:
    found = {}
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found[int(match.group(1))] = entry
    return found


def scripts(dialect: str = "sqlite") -> list[str]:
    """The migration scripts of a dialect, in order; the first is version 1."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    folder = resources.files(__package__).joinpath("migrations")
    common = _files(folder)
    if sorted(common) != list(range(1, len(common) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..N: {sorted(common)}")
    variants = _files(folder.joinpath("postgres")) if dialect == "postgres" else {}
    for number, entry in variants.items():
        if number not in common or common[number].name != entry.name:
            raise RuntimeError(f"postgres/{entry.name} varies no migration of that name")
    return [variants.get(n, common[n]).read_text("utf-8") for n in sorted(common)]


SCHEMA_VERSION = len(scripts())


def statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (comments and blank lines dropped)."""
    done, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            text = _without_comments(pending).strip()
            if text:
                done.append(text)
            pending = ""
    if _without_comments(pending).strip():
        raise ValueError(f"incomplete SQL statement at the end: {pending.strip()[:60]!r}")
    return done


def _without_comments(sql: str) -> str:
    # Whole-line comments only: a "--" inside a statement is left to SQLite.
    return "".join(line for line in sql.splitlines(keepends=True)
                   if not line.lstrip().startswith("--"))


def _refuse_newer(found: int) -> None:
    if found > SCHEMA_VERSION:
        # Written by a newer securechat: guessing at it could lose data. Say so, once.
        raise ConfigError(f"the database's schema (version {found}) is newer than this "
                          f"securechat knows ({SCHEMA_VERSION}); upgrade securechat")


def migrate(conn: Any) -> int:
    """Bring the schema up to SCHEMA_VERSION; return the version found before."""
    if isinstance(conn, sqlite3.Connection):
        return _migrate_sqlite(conn)
    return _migrate_postgres(conn)


def _migrate_sqlite(conn: sqlite3.Connection) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        _refuse_newer(found)
        for script in scripts()[found:]:
            for statement in statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


def _migrate_postgres(db: Any) -> int:
    """PostgreSQL's DDL is transactional: all the versions apply, or none does."""
    with db.transaction():
        # Held until COMMIT: a second process starting now waits here, then finds it done.
        db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_KEY,))
        db.execute("CREATE TABLE IF NOT EXISTS securechat_schema ("
                   "id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM securechat_schema").fetchone()
        found = row[0] if row else 0
        _refuse_newer(found)
        for script in scripts("postgres")[found:]:
            db.run_script(script)
        if found == SCHEMA_VERSION:
            return found
        db.execute("INSERT INTO securechat_schema (id, version) VALUES (1, ?)"
                   " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                   (SCHEMA_VERSION,))
    return found
