"""Housekeeping every ``PURGE_INTERVAL``: expired sessions leave the database and its files.

A session that times out is refused when it is presented; one that is never presented
again would otherwise keep its key wrap on disk until the next login or restart. Each
server process sweeps at start, at every login, and at least every ``PURGE_INTERVAL``:
``serve`` from a loop of its own (an idle server too), any other WSGI server at the first
request after the interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from .. import store

log = logging.getLogger(__name__)


def purge(app: Flask) -> int:
    """Delete sessions past their timeouts, then scrub the files; return how many went."""
    cfg = app.config
    with app.app_context():
        db = store.get_db()
        now = float((cfg.get("CLOCK") or time.time)())
        gone = store.delete_stale_sessions(db, now - cfg["SESSION_IDLE_TIMEOUT"],
                                           now - cfg["SESSION_ABSOLUTE_TIMEOUT"])
        if gone:
            store.scrub.now(db)
    app.extensions["securechat.purged_at"] = time.monotonic()
    return gone


def init_app(app: Flask) -> None:
    """Sweep at the first request after each interval (for servers that run no loop)."""
    app.extensions["securechat.purged_at"] = time.monotonic()
    app.before_request(_sweep_if_due)


def _sweep_if_due() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    due = app.extensions["securechat.purged_at"] + float(app.config["PURGE_INTERVAL"])
    if time.monotonic() >= due:
        app.extensions["securechat.purged_at"] = time.monotonic()  # one request sweeps
        purge(app)


def every_interval(app: Flask) -> Callable[[], None]:
    """Sweep every ``PURGE_INTERVAL`` from a thread of its own; return what stops it."""
    stop = threading.Event()
    interval = float(app.config["PURGE_INTERVAL"])

    def loop() -> None:
        while not stop.wait(interval):
            try:
                purge(app)
            except Exception as e:  # a sweep that fails is retried at the next interval
                log.error("the session sweep failed: %s", type(e).__name__, exc_info=e)

    thread = threading.Thread(target=loop, name="securechat-maintenance", daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join()

    return stopped
