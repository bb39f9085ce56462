"""Concurrency caps: what may run at once, so a few requests cannot freeze the server.

Rate limits count requests over time; these count requests *in progress*: password KDF
runs (each holds up to 128 MiB and a worker), and calls to the AI backend (a stream may
last minutes). Past a cap the answer comes at once (429 for one user's own excess, 503 +
``Retry-After`` when the server as a whole is full), so worker threads stay free for
everything else, ``/api/health`` included. The KDF and server-wide caps guard this
process's memory and threads, so they count here; a user's calls count in Redis when the
app has one (:mod:`securechat.server.leases`), so the cap holds across every process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g

from . import leases
from .http import IMPORT_BUSY_MESSAGE, busy, fail
from .leases import Lease, PerKey, PerKeyCap

__all__ = ["BackendCall", "PerKey", "Slots", "import_slot", "init_app", "kdf_slot"]

KDF_BUSY_MESSAGE = "The server is busy checking other passwords; try again in a moment."


class Slots:
    """At most ``size`` holders at once; at most ``queue`` more wait, each up to ``wait`` s."""

    def __init__(self, size: int, wait: float = 0.0, queue: int = 0) -> None:
        self.size, self.wait, self.queue = size, wait, queue
        self._held = self._waiting = 0
        self._cond = threading.Condition()

    def acquire(self) -> bool:
        """Take a slot (waiting if allowed); False when none came free in time."""
        with self._cond:
            if self._held < self.size:
                self._held += 1
                return True
            if self._waiting >= self.queue or self.wait <= 0:
                return False
            self._waiting += 1
            try:
                got = self._cond.wait_for(lambda: self._held < self.size, self.wait)
            finally:
                self._waiting -= 1
            if got:
                self._held += 1
            return got

    def release(self) -> None:
        """Give a slot back."""
        with self._cond:
            self._held -= 1
            self._cond.notify()

    @property
    def held(self) -> int:
        """Slots taken now."""
        return self._held


def init_app(app: Flask) -> None:
    """Create the app's caps from its settings (connecting to Redis when it has one)."""
    cfg = app.config
    leases.init_app(app)
    app.extensions["securechat.kdf_slots"] = Slots(
        int(cfg["KDF_CONCURRENCY"]), float(cfg["KDF_MAX_WAIT"]), int(cfg["KDF_QUEUE"]))
    app.extensions["securechat.backend_slots"] = Slots(int(cfg["MAX_STREAMS"]))
    # An import holds its body and the parsed export in memory: a few at a time.
    app.extensions["securechat.import_slots"] = Slots(int(cfg["IMPORT_CONCURRENCY"]))
    app.extensions["securechat.backend_per_user"] = leases.per_key(
        app, "streams", int(cfg["MAX_STREAMS_PER_USER"]))
    app.teardown_request(_release_on_error)


def _release_on_error(exc: BaseException | None) -> None:
    # Normally a call's slots are freed when its response is closed (or at once for JSON).
    # A request that failed after the view (an after_request hook raising) has its response
    # discarded unclosed: free them here. (A stream's first teardown, without error, comes
    # before it starts; that one must not.)
    if exc is not None:
        for call in g.pop("backend_calls", []):
            call.release()


@contextmanager
def import_slot() -> Iterator[None]:
    """Hold one import slot, or answer 503 + Retry-After at once."""
    slots: Slots = current_app.extensions["securechat.import_slots"]
    if not slots.acquire():
        busy(IMPORT_BUSY_MESSAGE, 5)
    try:
        yield
    finally:
        slots.release()


@contextmanager
def kdf_slot() -> Iterator[None]:
    """Hold one password-KDF slot, or answer 503 + Retry-After after a short wait."""
    slots: Slots = current_app.extensions["securechat.kdf_slots"]
    if not slots.acquire():
        busy(KDF_BUSY_MESSAGE, 2)
    try:
        yield
    finally:
        slots.release()


class BackendCall:
    """One call to the AI backend in progress: a slot of its user's, then one of the server's.

    Taking the user's slot (429 past ``MAX_STREAMS_PER_USER``) comes before anything is
    stored, so the client keeps its text; taking the server's (503 + ``Retry-After`` past
    ``MAX_STREAMS``) comes after the message is stored, so "Try again" asks for its reply.
    :meth:`release` frees what was taken, once, from whichever path ends the call.
    """

    def __init__(self, user_id: str) -> None:
        per_user: PerKeyCap = current_app.extensions["securechat.backend_per_user"]
        self._overall: Slots = current_app.extensions["securechat.backend_slots"]
        self._lease: Lease | None = None
        self._started = False
        self._once = threading.Lock()
        g.setdefault("backend_calls", []).append(self)
        # With Redis down this raises StorageError, answered 503: no slot, no call.
        self._lease = per_user.acquire("uid:" + user_id)
        if self._lease is None:
            fail(429, "rate_limited", f"You already have {per_user.size} replies in "
                 "progress; wait for one to finish.", {"Retry-After": "5"})

    def start(self) -> None:
        """Take the server-wide slot, or release everything and answer 503."""
        if not self._overall.acquire():
            self.release()
            busy("The server is answering as many chats as it can; try again in a few "
                 "seconds.", 5)
        self._started = True

    def release(self) -> None:
        """Free the slots taken (safe to call more than once, from any thread)."""
        if self._once.acquire(blocking=False):
            if self._started:
                self._overall.release()
            if self._lease is not None:
                self._lease.release()
