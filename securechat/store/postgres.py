"""PostgreSQL as the store: one pool per process, and the sqlite3-shaped handle queries use.

``SECURECHAT_DATABASE=postgresql://user@host:5432/db`` selects it (``pip install
'securechat[postgres]'``). Every query (the rules: :mod:`.database`) runs here unchanged: ``?``
placeholders become ``%s`` in one place (:func:`translate`), rows come back as tuples and
ciphertext as ``bytea``. A handle borrows a pooled connection for one statement, or for
one :meth:`Database.transaction`, never longer: a request streaming a slow AI reply holds
no connection. Under ``serve`` psycopg waits for its socket through gevent (it sees the
patched ``select``), so no query stalls the event loop and none needs a worker thread.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql://", "postgres://")
# Connections one process keeps at most: each is held for one statement or transaction.
POOL_SIZE = 10
_PASSWORD = re.compile(r"([?&]password=)[^&]*")


def is_url(database: str) -> bool:
    """True when ``DATABASE`` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(SCHEMES)


def shown(url: str) -> str:
    """The URL without its password (in the address or the query), for messages."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if ":" in user:
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***{at}{host}")
    return _PASSWORD.sub(r"\1***", parts.geturl())


def translate(sql: str) -> str:
    """sqlite3's ``?`` placeholders as psycopg's ``%s`` (a ``%`` is doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - checked here so a missing pool fails at start
    except ImportError:
        raise ConfigError("DATABASE is a postgresql:// URL but psycopg is not installed; "
                          "run: pip install 'securechat[postgres]'") from None
    return psycopg


class Rows:
    """A statement's result, read whole before its connection went back to the pool."""

    def __init__(self, rows: Sequence[Any], rowcount: int) -> None:
        self.rowcount = rowcount
        self._rows = iter(rows)

    def fetchone(self) -> Any:
        """The next row, or None."""
        return next(self._rows, None)

    def fetchall(self) -> list[Any]:
        """The rows not read yet."""
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return self._rows

    def close(self) -> None:
        """Nothing to release (kept for sqlite3's cursor interface)."""


class Database:
    """What queries use of a sqlite3 connection, over connections borrowed one use at a time.

    One handle serves one request (or one script); ``borrow`` lends a connection in
    autocommit mode and takes it back when its context ends.
    """

    def __init__(self, borrow: Callable[[], AbstractContextManager[psycopg.Connection]],
                 close: Callable[[], None] = lambda: None) -> None:
        driver = _psycopg()
        # sqlite3's connections name their exceptions too (DB-API): queries catch these.
        self.Error: type[Exception] = driver.Error
        self.IntegrityError: type[Exception] = driver.IntegrityError
        self._borrow, self._close = borrow, close
        self._held: psycopg.Connection | None = None

    @property
    def in_transaction(self) -> bool:
        """True between BEGIN and COMMIT/ROLLBACK of :meth:`transaction`."""
        return self._held is not None

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        """Run one statement with ``?`` placeholders; in the transaction when one is open."""
        if self._held is not None:
            return _run(self._held, translate(sql), parameters)
        with self._borrow() as conn:
            return _run(conn, translate(sql), parameters)

    def run_script(self, script: str) -> None:
        """Run several statements as written (no placeholders), inside the open transaction."""
        if self._held is None:
            raise RuntimeError("run_script needs an open transaction")
        # Without parameters psycopg sends the simple protocol: ';'-separated statements,
        # dollar-quoted bodies and all, exactly as psql would.
        self._held.execute(script.encode())

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN on one borrowed connection; COMMIT at the end, ROLLBACK on an exception.

        At READ COMMITTED, an UPDATE locks the rows it changes until COMMIT: a second
        writer of the same row (another request, another process) waits, then sees the
        committed value. Inside a transaction already, it joins that one (as SQLite's
        does): steps compose into one commit.
        """
        if self._held is not None:
            yield self
            return
        with self._borrow() as conn, conn.transaction():
            self._held = conn
            try:
                yield self
            finally:
                self._held = None

    def close(self) -> None:
        """Close what this handle owns (a pool's handle owns nothing)."""
        self._close()


def _run(conn: psycopg.Connection, sql: str, parameters: Sequence[Any]) -> Rows:
    with conn.cursor() as cur:
        cur.execute(sql, tuple(parameters))
        rows = cur.fetchall() if cur.description is not None else []
        return Rows(rows, cur.rowcount)


def connect(url: str) -> Database:
    """A handle over one connection of its own (start-up, scripts, tests); close it."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        # libpq's reason in one line; it names host, port and user, never the password.
        raise ConfigError(f"cannot connect to PostgreSQL at {shown(url)}: "
                          f"{' '.join(str(e).split())}") from None
    return Database(lambda: nullcontext(conn), conn.close)


class Pool:
    """One process's PostgreSQL connections (psycopg_pool), opened at the first request.

    Opening lazily keeps a ``serve --workers`` supervisor, which only migrates, from
    holding connections it never uses. Closed when the pool is (or is dropped).
    """

    def __init__(self, url: str, size: int = POOL_SIZE) -> None:
        _psycopg()
        from psycopg_pool import ConnectionPool

        self.url, self.size = url, size
        self._pool = ConnectionPool(url, min_size=1, max_size=size, open=False,
                                    kwargs={"autocommit": True}, name="securechat-db")
        self._opened = threading.Event()
        self._finalizer = weakref.finalize(self, _close_pool, self._pool)

    def take(self) -> Database:
        """A handle for one request; it borrows connections only while it runs a query."""
        return Database(self._connection)

    def give(self, db: Database) -> None:
        """Take a request's handle back: nothing to do, it holds nothing between queries."""

    def close(self) -> None:
        """Close every connection and stop the pool's threads."""
        self._finalizer()

    def _connection(self) -> AbstractContextManager[psycopg.Connection]:
        if not self._opened.is_set():
            self._pool.open()  # safe to repeat: a pool already open stays as it is
            self._opened.set()
        return self._pool.connection()


def _close_pool(pool: Any) -> None:
    try:
        pool.close()
    except RuntimeError:
        # Collected on one of the pool's own threads, which cannot join itself: close it
        # from another.
        threading.Thread(target=pool.close, name="securechat-db-close", daemon=True).start()
