"""Writers of one SQLite file wait in line, across this machine's processes, not in SQLite.

SQLite lets one writer in at a time. The others wait in its busy handler, which sleeps in
growing steps (1, 2, 5, 10 … 100 ms) between tries: with two ``serve`` processes on one
file, a send waited up to a second for a lock freed long before. A writer takes
:class:`Writers` first: this process's lock (its other threads or greenlets), then an
``flock`` on a file beside the database, which the kernel hands to a waiting process the
moment it is released. SQLite's own lock is then waited for only when a program outside
securechat holds it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..offload import cooperative


class Writers:
    """A re-entrant lock held by one writer of a database file at a time, machine-wide.

    ``path`` names the lock file (created owner-only on first use); None locks this
    process only (an in-memory database). A wait for another process runs in a thread of
    its own (gevent's pool under ``serve``), at most ``timeout`` seconds, then fails as
    SQLite's busy timeout does.
    """

    def __init__(self, path: str | None, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout
        self._local = threading.RLock()
        self._depth = 0  # re-entries of the thread holding ``_local``
        self._fd: int | None = None  # kept open: taking a free lock costs one system call
        self._held: int | None = None  # the file holding the lock: ``_fd`` or a claim's

    def __enter__(self) -> Writers:
        self._local.acquire()
        if self._depth == 0 and self.path is not None:
            try:
                self._held = self._lock_file(self.path)
            except BaseException:
                self._local.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0 and self._held is not None:
            held, self._held = self._held, None
            if held == self._fd:
                fcntl.flock(held, fcntl.LOCK_UN)
            else:
                os.close(held)  # a claim's own file: closing it lets the lock go
        self._local.release()

    def _lock_file(self, path: str) -> int:
        if self._fd is None:
            self._fd = _open(path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no wait, no thread
            return self._fd
        except BlockingIOError:
            pass
        claim = _Claim(path)
        try:
            if not _in_a_thread(claim.take, self.timeout):
                raise sqlite3.OperationalError("database is locked")
        except BaseException:
            claim.give_up()
            raise
        return claim.taken()

    def close(self) -> None:
        """Close the lock file (a lock held is released with it)."""
        with self._local:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _Claim:
    """One wait for the lock, on a file of its own, in a thread that may be given up on.

    A waiter that stops waiting (its timeout, its greenlet killed) cannot stop the thread:
    when the lock comes anyway, the thread closes its file, letting the lock go rather
    than keep it for no one. The file is closed by whichever side uses it last, so the
    thread never touches a file number that has been closed (and perhaps reused).
    """

    def __init__(self, path: str) -> None:
        self.fd = _open(path)
        self._guard = _native_lock()
        self._state = "waiting"  # then "taken", "failed" or "given up"
        self._error: OSError | None = None

    def take(self) -> None:
        """In the thread: wait for the lock, then hand it over (or let it go: no one waits)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            outcome = "taken"
        except OSError as e:
            self._error, outcome = e, "failed"
        with self._guard:
            if self._state == "given up":
                os.close(self.fd)
            else:
                self._state = outcome

    def taken(self) -> int:
        """The file now holding the lock (the thread is done); raises what the thread met."""
        if self._state == "failed":
            os.close(self.fd)
            raise sqlite3.OperationalError(f"database lock file: {self._error}")
        return self.fd

    def give_up(self) -> None:
        """By the waiter, who will not use the lock: it goes now, or when the thread has it."""
        with self._guard:
            if self._state != "waiting":  # the thread is done with the file
                os.close(self.fd)
            self._state = "given up"


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _native_lock() -> Any:
    """A lock between real threads (under gevent, ``threading.Lock`` is a greenlet's)."""
    if cooperative():
        from gevent import monkey

        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


def _in_a_thread(fn: Callable[[], None], timeout: float) -> bool:
    """Run ``fn`` in a real thread; True when it returned within ``timeout`` seconds."""
    if cooperative():
        import gevent

        result = gevent.get_hub().threadpool.spawn(fn)
        result.wait(timeout)
        return bool(result.ready())
    thread = threading.Thread(target=fn, daemon=True, name="securechat-writers-lock")
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def lock_path(database: str) -> str | None:
    """The lock file beside a SQLite database file; None for one in memory."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-writers"
