"""Housekeeping every ``PURGE_INTERVAL``: what has expired leaves the database and its files.

A session that times out is refused when it is presented; one that is never presented
again would otherwise keep its key wrap on disk until the next login or restart. And a
user who keeps conversations for N days (``retention_days``) has their unstarred ones
with no message for N days deleted. Each server process sweeps at start, at every login
(that user's conversations), and at least every ``PURGE_INTERVAL``: ``serve`` from a loop
of its own (an idle server too), any other WSGI server at the first request after the
interval. Every sweep is idempotent: processes sharing a database may run them at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from .. import store
from .sessions import iso

log = logging.getLogger(__name__)


DAY = 86400


def purge(app: Flask) -> int:
    """Delete expired sessions and conversations, then scrub the files; return how many."""
    cfg = app.config
    with app.app_context():
        db = store.get_db()
        now = float((cfg.get("CLOCK") or time.time)())
        gone = store.delete_stale_sessions(db, now - cfg["SESSION_IDLE_TIMEOUT"],
                                           now - cfg["SESSION_ABSOLUTE_TIMEOUT"])
        for user_id, days in store.retention_policies(db):
            gone += expire_conversations(db, now, user_id, days)
        # An import still hidden a day after it began belongs to a process that died.
        gone += store.portable.discard_stale_imports(db, iso(now - DAY))
        if gone:
            store.scrub.now(db)
    app.extensions["securechat.purged_at"] = time.monotonic()
    return gone


def expire_conversations(db: store.Database, now: float, user_id: str,
                         days: int | None) -> int:
    """Delete the user's unstarred conversations idle ``days`` or more; how many went.

    The caller scrubs the files afterwards (one scrub for a whole sweep).
    """
    if days is None:
        return 0
    # The same format as every updated_at: the strings compare as the times do.
    return store.delete_idle_conversations(db, user_id, iso(now - days * DAY))


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
