"""Server-side sessions: the signed cookie, loading a request's session, CSRF, timeouts.

The cookie carries a random token, signed with the server secret. The database keeps
only the token's hash and the user's data key wrapped under a key derived from the
token, so a copy of the database plus the secret opens nothing without a live cookie.
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import Response, current_app, g, request
from itsdangerous import BadSignature, Signer

from .. import crypto, records, store
from ..errors import DecryptionError
from ..protocol import CSRF_HEADER, client_key
from .http import fail

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

F = TypeVar("F", bound=Callable[..., Any])


def now() -> float:
    """Current time in seconds; ``CLOCK`` in the settings makes it injectable for tests."""
    clock = current_app.config.get("CLOCK") or time.time
    return float(clock())


def iso(ts: float | None = None) -> str:
    """Format a timestamp (default: now) as ISO-8601 UTC."""
    moment = datetime.fromtimestamp(now() if ts is None else ts, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def cookie_name(config: Mapping[str, Any] | None = None) -> str:
    """The session cookie's name: ``__Host-`` prefixed when served over HTTPS."""
    https = (current_app.config if config is None else config)["HTTPS"]
    return "__Host-securechat" if https else "securechat_session"


def cookie_signer(config: Mapping[str, Any] | None = None) -> Signer:
    """What signs (and checks) session cookies: the server secret, nothing else."""
    secret = (current_app.config if config is None else config)["SECRET_KEY"]
    return Signer(secret, salt="securechat.session-cookie")


def presented_token() -> str | None:
    """The session token of the request's cookie, if its signature holds."""
    cookie = request.cookies.get(cookie_name())
    if not cookie:
        return None
    try:
        return cookie_signer().unsign(cookie).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None


def start(user_id: str, data_key: bytes) -> tuple[str, str]:
    """Store a new session for the user; return its cookie's value and its CSRF token.

    The session gets an opaque id for its owner's list, and the browser and address it
    came from, sealed under the owner's data key.
    """
    token, t, session_id = crypto.new_token(), now(), secrets.token_hex(16)
    wrapped = crypto.seal(crypto.session_wrap_key(token), data_key,
                          records.session_key_ad(user_id))
    seen = {"label": device_label(request.headers.get("User-Agent", "")),
            "address": client_key(request.remote_addr)}
    details = crypto.seal(data_key, json.dumps(seen).encode("utf-8"),
                          records.session_details_ad(user_id, session_id))
    store.create_session(store.get_db(), crypto.token_hash(token), user_id, wrapped, t,
                         session_id, details)
    return cookie_signer().sign(token).decode("ascii"), crypto.csrf_token(token)


_BROWSERS = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
             ("Chromium/", "Chromium"), ("Safari/", "Safari"), ("python-requests/", "Python"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"),
            ("Linux", "Linux"))


def device_label(user_agent: str) -> str:
    """"Firefox on Linux", from a User-Agent (enough to recognise one's own devices)."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), "A browser")
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), "")
    return f"{browser} on {system}" if system else browser


def set_cookie(response: Response, value: str) -> None:
    """Give the browser the session cookie: HttpOnly, SameSite=Lax, Secure under HTTPS."""
    cfg = current_app.config
    response.set_cookie(cookie_name(), value, max_age=int(cfg["SESSION_ABSOLUTE_TIMEOUT"]),
                        path="/", httponly=True, samesite="Lax", secure=bool(cfg["HTTPS"]))


def clear_cookie(response: Response) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(cookie_name(), path="/", httponly=True, samesite="Lax",
                           secure=bool(current_app.config["HTTPS"]))


def load_session() -> bool:
    """Authenticate the request's cookie; fill ``g.user_id``, ``g.data_key``, ``g.csrf``."""
    if "user_id" in g:
        return True
    token = presented_token()
    if token is None:
        return False
    db, digest, t = store.get_db(), crypto.token_hash(token), now()
    session = store.get_session(db, digest)
    if session is None:
        return False
    cfg = current_app.config
    idle, absolute = cfg["SESSION_IDLE_TIMEOUT"], cfg["SESSION_ABSOLUTE_TIMEOUT"]
    if t - session.last_seen > idle or t - session.created_at > absolute:
        store.delete_session(db, digest)
        store.scrub.now(db)
        g.session_expired = True
        return False
    try:
        data_key = crypto.open_(crypto.session_wrap_key(token), session.wrapped_key,
                                records.session_key_ad(session.user_id))
    except DecryptionError:
        return False
    # Write last_seen only when it moved noticeably: one write per request is wasteful.
    if t - session.last_seen >= min(60.0, idle * 0.05):
        store.touch_session(db, digest, t)
    g.user_id, g.username, g.data_key = session.user_id, session.username, data_key
    g.token_digest, g.csrf, g.session_id = digest, crypto.csrf_token(token), session.id
    return True


def check_csrf(always: bool = False) -> None:
    """Refuse a state-changing request whose X-CSRF-Token does not match the session.

    ``always``: a read too (an export: no other site may make the browser download one).
    """
    if request.method in _SAFE_METHODS and not always:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), g.csrf.encode("ascii")):
        fail(403, "csrf_failed", f"Missing or wrong {CSRF_HEADER} header.")


def login_required(view: F) -> F:
    """Require a live session (401) and, for state changes, the CSRF header (403)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not load_session():
            if g.get("session_expired"):
                fail(401, "session_expired", "Your session expired; log in again.")
            fail(401, "unauthorized", "Log in first.")
        check_csrf()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
