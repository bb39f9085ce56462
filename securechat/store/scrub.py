"""Make deleted rows unrecoverable from the SQLite files, before the response is sent.

``secure_delete`` zeroes a deleted row in the database file, but in WAL mode every change
is first appended to the ``-wal`` file as a whole page, and those old page images stay
there (a revoked session's key wrap, a replaced password wrap, a deleted conversation)
until a checkpoint copies the pages back *and* the log is truncated. PASSIVE and RESTART
checkpoints leave the old frames in the file; only ``TRUNCATE`` empties it. A checkpoint
cannot finish while another connection reads an older snapshot, so it is tried briefly
in the request and, if still busy, retried in the background until it succeeds.

This guarantee is SQLite's. PostgreSQL keeps a deleted row as a dead tuple until VACUUM
reuses its space, and its page images in ``pg_wal`` until the segment is recycled; nothing
a request can do clears those, so :func:`now` does nothing there (SECURITY.md says what
an operator can do).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from flask import current_app

from .. import offload

log = logging.getLogger(__name__)

# In the request: a few short tries (each waits at most BUSY_MS for readers to finish).
TRIES, BUSY_MS = 3, 50
# In the background: a try every RETRY_EVERY seconds, a warning after GIVE_UP_AFTER.
RETRY_EVERY, GIVE_UP_AFTER = 0.1, 300.0


def checkpoint(db: sqlite3.Connection, tries: int = TRIES) -> bool:
    """Fold the WAL into the database and truncate it to zero bytes; True when done."""
    (restore,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
    try:
        for _ in range(tries):
            busy, _log, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return True
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(restore)}")
    return False


class Scrubber:
    """Retries a busy checkpoint from one background thread until it succeeds."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wanted = False

    def later(self) -> None:
        """Ask for a checkpoint soon (the request could not finish one)."""
        with self._lock:
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="securechat-scrub")
                self._thread.start()

    def _run(self) -> None:
        conn = self._connect()
        started = time.monotonic()
        try:
            while True:
                with self._lock:
                    self._wanted = False
                if checkpoint(conn, tries=1):
                    with self._lock:
                        if not self._wanted:
                            self._thread = None
                            return
                elif time.monotonic() - started > GIVE_UP_AFTER:
                    log.warning("the WAL could not be checkpointed for %.0f s: a long reader "
                                "keeps deleted rows in the -wal file", GIVE_UP_AFTER)
                    started = time.monotonic()
                time.sleep(RETRY_EVERY)
        finally:
            conn.close()


def now(db: object) -> None:
    """After a delete or re-wrap: truncate the WAL now, or have it retried until it is.

    Only a SQLite connection has a WAL file to truncate; for PostgreSQL this does nothing.
    """
    if not isinstance(db, sqlite3.Connection):
        return
    if not offload.blocking(checkpoint, db):
        current_app.extensions["securechat.scrubber"].later()
