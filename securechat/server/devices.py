"""Where you are logged in, and what happened to your account: sessions and the security log.

A session is listed by an opaque id (never its token or the token's hash), with the
browser and address it came from (sealed under your data key at rest); revoking one ends
it everywhere and scrubs it from the files. The security log is metadata only.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from .. import crypto, records, store
from . import eventlog
from .http import fail
from .sessions import login_required

bp = Blueprint("devices", __name__, url_prefix="/api/account")

DEFAULT_PAGE, MAX_PAGE = 50, 200


def _iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _session_json(row: store.accounts.SessionRow) -> dict[str, Any]:
    seen: dict[str, Any] = {"label": None, "address": None}
    if row.details is not None:
        opened = crypto.open_(g.data_key, row.details,
                              records.session_details_ad(g.user_id, row.id))
        seen.update(json.loads(opened))
    return {"id": row.id, "created_at": _iso(row.created_at), "last_seen": _iso(row.last_seen),
            "current": row.token_hash == g.token_digest, **seen}


@bp.get("/sessions")
@login_required
def list_sessions() -> Response:
    """Your live sessions, newest first; ``current`` marks this one."""
    rows = store.accounts.list_sessions(store.get_db(), g.user_id)
    return jsonify(sessions=[_session_json(row) for row in rows])


@bp.delete("/sessions/<session_id>")
@login_required
def revoke(session_id: str) -> Response:
    """End one of your sessions (this one too, if you name it)."""
    db = store.get_db()
    with store.transaction(db):
        if not store.accounts.delete_session_by_id(db, g.user_id, session_id):
            fail(404, "not_found", "No such session.")
        eventlog.record("session_revoked")
    store.scrub.now(db)
    return Response(status=204)


@bp.delete("/sessions")
@login_required
def revoke_others() -> Response:
    """End every session but this one."""
    db = store.get_db()
    with store.transaction(db):
        store.accounts.delete_other_sessions(db, g.user_id, g.token_digest)
        eventlog.record("sessions_revoked")
    store.scrub.now(db)
    return Response(status=204)


@bp.get("/events")
@login_required
def events() -> Response:
    """Your security log, newest first, a page at a time (``next_before`` continues)."""
    try:
        limit = int(request.args.get("limit", DEFAULT_PAGE))
        before_arg = request.args.get("before")
        before = None if before_arg in (None, "") else int(before_arg)
    except ValueError:
        fail(400, "invalid_query", "'limit' is a number; 'before' a cursor from this server.")
    if not 1 <= limit <= MAX_PAGE or (before is not None and not 0 < before < 2**62):
        fail(400, "invalid_query", f"'limit' is 1-{MAX_PAGE}; 'before' a cursor from this "
             "server.")
    rows = store.events.list_events(store.get_db(), g.user_id, limit + 1, before)
    more, rows = len(rows) > limit, rows[:limit]
    return jsonify(events=[eventlog.shown(g.user_id, g.data_key, e) for e in rows],
                   next_before=str(rows[-1].seq) if more else None)
