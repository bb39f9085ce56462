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
    its own, at most ``timeout`` seconds, then fails as SQLite's busy timeout does. At most
    one such thread exists: a wait given up on is taken over by the next writer, so a
    process that holds the lock for long cannot pile up waiting threads here.
    """

    def __init__(self, path: str | None, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout
        self._local = threading.RLock()
        self._depth = 0  # re-entries of the thread holding ``_local``
        self._fd: int | None = None  # kept open: taking a free lock costs one system call
        self._held: int | None = None  # the file holding the lock: ``_fd`` or a claim's
        self._claim: _Claim | None = None  # the last wait, perhaps still pending
        self._pool: Any = None  # under gevent: the one thread that waits (not the KDFs')
        self._closing = False

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
        try:
            self._depth -= 1
            if self._depth == 0:
                held, self._held = self._held, None
                if held is not None and held == self._fd:
                    fcntl.flock(held, fcntl.LOCK_UN)
                elif held is not None:
                    os.close(held)  # a claim's own file: closing it lets the lock go
                if self._closing:
                    self._close_file()
        finally:
            self._local.release()

    def _lock_file(self, path: str) -> int:
        if self._fd is None:
            self._fd = _open(path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no wait, no thread
            return self._fd
        except BlockingIOError:
            pass
        claim = self._claim
        if claim is None or not claim.resume():
            claim = self._claim = _Claim(path, self._in_a_thread)
        try:
            if not claim.wait(self.timeout):
                raise sqlite3.OperationalError("database is locked")
        except BaseException:
            claim.give_up()
            raise
        return claim.taken()

    def _in_a_thread(self, fn: Callable[[], None]) -> Callable[[float], bool]:
        """Start ``fn`` in a real thread; return how to wait for it (True: it is done)."""
        if cooperative():
            if self._pool is None:
                from gevent.threadpool import ThreadPool

                self._pool = ThreadPool(1)
            job = self._pool.spawn(fn)

            def wait_job(timeout: float) -> bool:
                job.wait(timeout)
                return bool(job.ready())

            return wait_job
        thread = threading.Thread(target=fn, daemon=True, name="securechat-writers-lock")
        thread.start()

        def wait_thread(timeout: float) -> bool:
            thread.join(timeout)
            return not thread.is_alive()

        return wait_thread

    def close(self) -> None:
        """Close the lock file (at the outermost exit, if this thread holds the lock)."""
        with self._local:
            if self._depth:
                self._closing = True
            else:
                self._close_file()

    def _close_file(self) -> None:
        self._closing = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pool is not None:
            self._pool.kill()  # a thread still waiting ends when its wait does
            self._pool = None


class _Claim:
    """One wait for the lock, on a file of its own, in a thread that may be given up on.

    A waiter that stops waiting (its timeout, its greenlet killed) cannot stop the thread.
    The next waiter takes the wait over (:meth:`resume`); if none does, the thread closes
    its file when the lock comes, letting it go rather than keep it for no one. The file
    is closed by whichever side uses it last, so the thread never touches a file number
    that has been closed (and perhaps reused).
    """

    def __init__(self, path: str,
                 start: Callable[[Callable[[], None]], Callable[[float], bool]]) -> None:
        self.fd = _open(path)
        self._guard = _native_lock()
        # "waiting", then "taken" or "failed" (the thread is done), or "given up" (until
        # resumed, or "closed" by the thread).
        self._state = "waiting"
        self._error: OSError | None = None
        try:
            self.wait = start(self._take)  # wait(timeout): True when the thread is done
        except BaseException:
            os.close(self.fd)
            raise

    def _take(self) -> None:
        """In the thread: wait for the lock, then hand it over (or let it go: no one waits)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            outcome = "taken"
        except OSError as e:
            self._error, outcome = e, "failed"
        with self._guard:
            if self._state == "given up":
                os.close(self.fd)
                self._state = "closed"
            else:
                self._state = outcome

    def resume(self) -> bool:
        """Take over a wait given up on; False when its thread has already let the lock go."""
        with self._guard:
            if self._state != "given up":
                return False
            self._state = "waiting"
            return True

    def taken(self) -> int:
        """The file now holding the lock (the thread is done); raises what the thread met."""
        if self._state != "taken":  # "failed": the thread met an error, and said which
            self._state = "closed"
            os.close(self.fd)
            raise sqlite3.OperationalError(f"database lock file: {self._error}")
        self._state = "handed over"  # the file is the holder's to close
        return self.fd

    def give_up(self) -> None:
        """By the waiter, who will not use the lock: it goes now, or when the thread has it."""
        with self._guard:
            if self._state == "waiting":
                self._state = "given up"
            elif self._state in ("taken", "failed"):  # the thread is done with the file
                self._state = "closed"
                os.close(self.fd)


def _open(path: str) -> int:
    """The lock file, created owner-only; a symlink there, or another owner's file, refused."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        # Anyone else's file could be locked by them for good: no write would go through.
        raise sqlite3.OperationalError(f"{path} belongs to another user")
    return fd


def _native_lock() -> Any:
    """A lock between real threads (under gevent, ``threading.Lock`` is a greenlet's)."""
    if cooperative():
        from gevent import monkey

        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


def lock_path(database: str) -> str | None:
    """The lock file beside a SQLite database file; None for one in memory."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-writers"
