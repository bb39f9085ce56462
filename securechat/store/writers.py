"""Writers of one SQLite file wait in line, across this machine's processes, not in SQLite.

SQLite lets one writer in at a time. The others wait in its busy handler, which sleeps in
growing steps (1, 2, 5, 10 … 100 ms) between tries: with two ``serve`` processes on one
file, a send waited tens of milliseconds for a lock freed long before. A writer takes
:class:`Writers` first: this process's lock (its other threads or greenlets), then an
``flock`` on a file beside the database, tried again every few milliseconds at most while
another process holds it. SQLite's own lock is then waited for only when a program
outside securechat holds it.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sqlite3
import threading
import time
from types import TracebackType

# Waits between tries for another process's lock (seconds): short, as writes are short.
RETRY = (0.0002, 0.0005, 0.001)


class Writers:
    """A re-entrant lock held by one writer of a database file at a time, machine-wide.

    ``path`` names the lock file (created owner-only on first use); None locks this
    process only (an in-memory database). Waiting for another process sleeps between
    tries (a greenlet's sleep under ``serve``: nothing else waits), at most ``timeout``
    seconds, then fails as SQLite's busy timeout does.
    """

    def __init__(self, path: str | None, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout
        self._local = threading.RLock()
        self._depth = 0  # re-entries of the thread holding ``_local``
        self._fd: int | None = None

    def __enter__(self) -> Writers:
        self._local.acquire()
        if self._depth == 0 and self.path is not None:
            try:
                self._lock_file(self.path)
            except BaseException:
                self._local.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def _lock_file(self, path: str) -> None:
        if self._fd is None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Tries rather than one blocking flock in a worker thread: a waiter that is given
        # up on (a greenlet killed) must not take the lock later and keep it.
        deadline = time.monotonic() + self.timeout
        for attempt in itertools.count():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(RETRY[min(attempt, len(RETRY) - 1)])

    def close(self) -> None:
        """Close the lock file (a lock held is released with it)."""
        with self._local:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def lock_path(database: str) -> str | None:
    """The lock file beside a SQLite database file; None for one in memory."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-writers"
