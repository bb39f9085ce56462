"""What every query needs: the :class:`Database` it runs on, :func:`transaction`, the rules.

The same SQL runs on SQLite and on PostgreSQL (:mod:`.postgres` adapts a psycopg
connection to what is used here). To stay portable, a query in this package (:mod:`.users`,
:mod:`.conversations`, :mod:`.accounts`, :mod:`.events`, :mod:`.portable`):

* takes positional ``?`` placeholders only (PostgreSQL's adapter turns them into ``%s``),
  never a ``?`` or ``%`` inside an SQL string literal, never ``x IS ?``;
* uses no ``PRAGMA``, no ``RETURNING``, no ``INSERT OR ...``/``REPLACE``, no ``rowid``
  and no function only SQLite has (``ifnull``, ``group_concat``, ``julianday``,
  ``strftime``, ``datetime``, ``printf``, ``instr``, ``last_insert_rowid``, ``changes``);
  ``COALESCE``, ``MAX``, ``COUNT``, ``LOWER``, row-value comparisons and
  ``ON CONFLICT (...) DO ...`` work on both;
* passes values of the column's type: ``int(flag)`` for an INTEGER flag (PostgreSQL
  refuses a ``bool`` there), ``bytes`` for a BLOB/bytea, ``str`` for TEXT;
* writes several rows only inside :func:`transaction`, and catches a failed statement
  outside it (on PostgreSQL an error ends the transaction); a duplicate key is
  ``db.IntegrityError`` on both.

``tests/test_store_portable.py`` checks the first two rules in every such module; the
contract suite runs against both databases for the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Rows(Protocol):
    """A statement's result, as sqlite3's cursor offers it."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Database(Protocol):
    """What every query needs of a connection: SQLite's (:func:`.connect`) or PostgreSQL's."""

    IntegrityError: type[Exception]

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Rows: ...

    def transaction(self) -> AbstractContextManager[Any]: ...


def transaction(conn: Database) -> AbstractContextManager[Any]:
    """A write transaction that takes its lock at once (no upgrade deadlocks).

    Each store says how: SQLite begins IMMEDIATE once its process's other writers are done
    (:mod:`.connection`); PostgreSQL holds one connection from BEGIN to COMMIT, and the
    first UPDATE of a row locks that row until then (:mod:`.postgres`).
    """
    return conn.transaction()
