"""The database of an app: SQLite (WAL, the default) or PostgreSQL, borrowed per request.

``DATABASE`` is a SQLite file's path or a ``postgresql://`` URL (:mod:`.postgres`). Either
way the schema is migrated and stale sessions swept once at start, and each request gets a
handle from the app's pool on first use (:func:`get_db`), given back at teardown.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from flask import Flask, current_app, g

from .. import offload
from ..errors import ConfigError
from . import postgres, scrub
from .database import Database
from .migrate import migrate
from .users import delete_stale_sessions
from .writers import Writers, lock_path

# How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_MS = 30_000


# Statements that take SQLite's write lock (and may wait for it, or fsync at the end).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "COMMIT", "ROLLBACK")
_SQLITE_BUSY = 5  # sqlite3.SQLITE_BUSY from Python 3.11 on
# Those that change a row or a few, not waiting for anything inside a held transaction,
# when their values are small (an import's large messages still go to a worker thread).
_ROW_WRITES = ("INSERT", "UPDATE")
_INLINE_BYTES = 16 * 1024


class Connection(sqlite3.Connection):
    """A connection whose writers queue in this process, and block no event loop.

    SQLite lets one writer in at a time; others spin in its busy handler, sleeping in
    growing steps (tens of milliseconds under load). Writers wait on ``writers`` instead
    (:class:`.writers.Writers`, shared by a pool's connections and, through a lock file,
    by this machine's processes), so only programs outside securechat are ever waited for
    in SQLite. Under gevent, what can wait runs in a worker thread
    (:mod:`securechat.offload`): a wait for another process's lock, an fsync at commit, a
    delete that zeroes many pages. A row-sized INSERT or UPDATE (values of 16 KiB at most)
    inside a transaction this connection holds only touches the page cache, so it runs
    where it is: a round trip to a worker thread costs more than the statement, and the
    writers' lock is held meanwhile.
    """

    writers: Writers
    _own_writers = False

    def close(self) -> None:
        """Close the connection (and its writers' lock file, when it is not a pool's)."""
        try:
            super().close()
        finally:
            if self._own_writers:
                self.writers.close()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement; writes are serialized and what can wait is off the event loop."""
        verb = sql.lstrip()[:8].upper()
        if not verb.startswith(_WRITES):
            return super().execute(sql, parameters)
        if self.in_transaction:  # inside BEGIN IMMEDIATE: this connection holds the lock
            if verb.startswith(_ROW_WRITES) and _small(parameters):
                return super().execute(sql, parameters)
            return offload.blocking(super().execute, sql, parameters)
        with self.writers:
            return offload.blocking(super().execute, sql, parameters)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN IMMEDIATE once this process's other writers are done; COMMIT or ROLLBACK.

        IMMEDIATE takes SQLite's write lock at once: a reader upgraded to a writer halfway
        could deadlock with another one. Inside a transaction already, it joins that one:
        steps compose into one commit (an account change and its security-log event).
        """
        if self.in_transaction:
            yield self
            return
        with self.writers:
            self._begin()
            try:
                yield self
            except BaseException:
                self.execute("ROLLBACK")
                raise
            self.execute("COMMIT")

    def _begin(self) -> None:
        """BEGIN IMMEDIATE: tried at once, and waited for off the event loop only if busy.

        securechat's writers already queue on ``writers``, so the lock is free unless
        another program holds it; the first try does not wait (busy timeout 0).
        """
        if offload.cooperative():
            super().execute("PRAGMA busy_timeout=0")
            try:
                super().execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
            finally:
                super().execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self.execute("BEGIN IMMEDIATE")


def _busy(error: sqlite3.OperationalError) -> bool:
    """True when SQLite said another connection holds the lock (SQLITE_BUSY)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+; 3.10 has the message
    # The extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT) are busy too.
    return code & 0xFF == _SQLITE_BUSY if code is not None else "locked" in str(error)


def _small(parameters: Any) -> bool:
    """Whether a statement's values are a message's size or less (it writes a few pages)."""
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return sum(len(v) for v in values if isinstance(v, (str, bytes))) <= _INLINE_BYTES


def connect(database: str, writers: Writers | None = None) -> Any:
    """Open a connection of one's own: SQLite (a :class:`Connection`) or PostgreSQL.

    SQLite's is in autocommit mode, WAL, foreign keys on; ``writers`` is the lock its
    writes queue on (a pool's, shared by its connections). A ``postgresql://`` URL gives a
    :class:`.postgres.Database` on one connection. Close either when done.
    """
    if postgres.is_url(database):
        return postgres.connect(database)
    path = database
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False, factory=Connection)
    if writers is None:
        writers, conn._own_writers = Writers(lock_path(path), BUSY_TIMEOUT_MS / 1000), True
    conn.writers = writers
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Deleted rows are zeroed so a removed conversation does not linger in free pages.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


class Pool:
    """Idle connections reused across requests: opening one costs more than a query.

    It also keeps the WAL file alive between requests instead of folding it back into
    the database after every one. Connections are closed when the pool is.
    """

    def __init__(self, path: str, size: int = 8) -> None:
        self.path, self.size = path, size
        # One writer at a time, of this process and of the others on this machine.
        self.writers = Writers(lock_path(path), BUSY_TIMEOUT_MS / 1000)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Closed explicitly even when the app is simply dropped (no ResourceWarning).
        self._finalizer = weakref.finalize(self, _close_all, self._idle, self.writers)

    def take(self) -> sqlite3.Connection:
        """An idle connection, or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self.path, self.writers)

    def give(self, conn: sqlite3.Connection) -> None:
        """Return a connection after a request (closed when the pool is full)."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # never hand on a half-done transaction
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        self._finalizer()


def _close_all(idle: list[sqlite3.Connection], writers: Writers) -> None:
    while idle:
        idle.pop().close()
    writers.close()


def init_app(app: Flask) -> None:
    """Create or migrate the database; each request borrows a handle from the app's pool."""
    database = app.config["DATABASE"]
    if postgres.is_url(database):
        _init_postgres(app, database)
    else:
        _init_sqlite(app, database)
    app.teardown_appcontext(_close_db)


def _init_sqlite(app: Flask, path: str) -> None:
    if path != ":memory:" and not os.path.exists(path):
        # Owner-only from the start; SQLite gives the -wal and -shm files the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        with closing(connect(path)) as conn:
            _prepare(app, conn)
            # Whatever an earlier run deleted, its old pages leave the -wal file now.
            scrub.checkpoint(conn)
    except sqlite3.DatabaseError as e:
        # Not a database, or a damaged one: say which file, start nothing.
        raise ConfigError(f"{path} cannot be used as the database ({e})") from None
    app.extensions["securechat.db"] = Pool(path)
    app.extensions["securechat.scrubber"] = scrub.Scrubber(lambda: connect(path))


def _init_postgres(app: Flask, url: str) -> None:
    db = postgres.connect(url)  # a ConfigError names the server when it cannot be reached
    try:
        _prepare(app, db)
    except db.Error as e:  # refused: not ours, no rights, a damaged schema
        raise ConfigError(f"{postgres.shown(url)} cannot be used as the database "
                          f"({' '.join(str(e).split())})") from None
    finally:
        db.close()
    app.extensions["securechat.db"] = postgres.Pool(url)


def _prepare(app: Flask, db: Database) -> None:
    migrate(db)
    # Sessions that timed out while the server was down go now, not at the next login.
    now = float((app.config.get("CLOCK") or time.time)())
    delete_stale_sessions(db, now - app.config["SESSION_IDLE_TIMEOUT"],
                          now - app.config["SESSION_ABSOLUTE_TIMEOUT"])


def get_db() -> Database:
    """Return this request's connection, borrowing it from the pool on first use."""
    if "db" not in g:
        g.db = current_app.extensions["securechat.db"].take()
    return g.db


def _close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        current_app.extensions["securechat.db"].give(db)
