"""The schema's versions: ``migrations/NNNN_name.sql`` files, applied in order, in one transaction.

Each file takes the schema from version N-1 to N (``PRAGMA user_version`` records where a
database is). Statements are split with SQLite's own :func:`sqlite3.complete_statement`,
so a ``;`` inside a string, a comment or a trigger body does not end a statement.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from ..errors import ConfigError

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def scripts() -> list[str]:
    """The migration scripts, in order; the first is version 1."""
    found = {}
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text("utf-8")
    if sorted(found) != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..N: {sorted(found)}")
    return [found[n] for n in sorted(found)]


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


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            # Written by a newer securechat: guessing at it could lose data. Say so, once.
            raise ConfigError(f"the database's schema (version {found}) is newer than this "
                              f"securechat knows ({SCHEMA_VERSION}); upgrade securechat")
        for script in scripts()[found:]:
            for statement in statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
