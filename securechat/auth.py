"""Register, login, logout and server-side sessions with CSRF protection.

The cookie carries a random token, signed with the server secret. The database keeps
only the token's hash and the user's data key wrapped under a key derived from the
token, so a copy of the database plus the secret opens nothing without a live cookie.
"""

from __future__ import annotations

import functools
import hmac
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from itsdangerous import BadSignature, Signer

from . import capacity, crypto, limits, scrub, store
from .api import fail, json_body, optional_json_body, string_field
from .errors import DecryptionError

bp = Blueprint("auth", __name__, url_prefix="/api")

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SENTINEL_SALT = b"securechat-unknown-user-salt"

F = TypeVar("F", bound=Callable[..., Any])


def now() -> float:
    """Current time in seconds; ``CLOCK`` in the config makes it injectable for tests."""
    clock = current_app.config.get("CLOCK") or time.time
    return float(clock())


def iso(ts: float | None = None) -> str:
    """Format a timestamp (default: now) as ISO-8601 UTC."""
    moment = datetime.fromtimestamp(now() if ts is None else ts, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def cookie_name() -> str:
    """The session cookie's name: ``__Host-`` prefixed when served over HTTPS."""
    return "__Host-securechat" if current_app.config["HTTPS"] else "securechat_session"


def kdf_params() -> crypto.KdfParams:
    """The configured KDF cost for new and upgraded password wraps."""
    cfg = current_app.config
    return crypto.KdfParams(int(cfg["KDF_LOG_N"]), int(cfg["KDF_R"]), int(cfg["KDF_P"]))


def _derive(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
    """Run the password KDF, at most ``KDF_CONCURRENCY`` at once (503 when none frees soon).

    Each scrypt run holds 128 MiB: without a cap, a burst of logins multiplies that; and a
    request waiting for a slot holds a worker, so the wait is short and the queue bounded.
    """
    with capacity.kdf_slot():
        return crypto.derive_kek(password, salt, params)


def _signer() -> Signer:
    return Signer(current_app.config["SECRET_KEY"], salt="securechat.session-cookie")


def _user_key_ad(user_id: str) -> bytes:
    return crypto.record_ad("user-key", user=user_id)


def _session_key_ad(user_id: str) -> bytes:
    return crypto.record_ad("session-key", user=user_id)


# --- loading the session of a request ----------------------------------------

def _presented_token() -> str | None:
    cookie = request.cookies.get(cookie_name())
    if not cookie:
        return None
    try:
        return _signer().unsign(cookie).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None


def load_session() -> bool:
    """Authenticate the request's cookie; fill ``g.user_id``, ``g.data_key``, ``g.csrf``."""
    if "user_id" in g:
        return True
    token = _presented_token()
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
        scrub.now(db)
        g.session_expired = True
        return False
    try:
        data_key = crypto.open_(crypto.session_wrap_key(token), session.wrapped_key,
                                _session_key_ad(session.user_id))
    except DecryptionError:
        return False
    # Write last_seen only when it moved noticeably: one write per request is wasteful.
    if t - session.last_seen >= min(60.0, idle * 0.05):
        store.touch_session(db, digest, t)
    g.user_id, g.username, g.data_key = session.user_id, session.username, data_key
    g.token_digest, g.csrf = digest, crypto.csrf_token(token)
    return True


def check_csrf() -> None:
    """Refuse a state-changing request whose X-CSRF-Token does not match the session."""
    if request.method in _SAFE_METHODS:
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


# --- routes ---------------------------------------------------------------------

def _credentials() -> tuple[str, str]:
    data = json_body()
    username = string_field(data, "username")
    password = string_field(data, "password")
    if len(password) > MAX_PASSWORD:
        fail(400, "invalid_password", f"Passwords are at most {MAX_PASSWORD} characters.")
    return username, password


def _named_in_body() -> object:
    """The ``username`` a request body names, if it names one (for its rate-limit key)."""
    data = request.get_json(silent=True) if request.mimetype == "application/json" else None
    return data.get("username") if isinstance(data, dict) else None


@bp.post("/register")
def register() -> tuple[Response, int]:
    """Create an account whose data key is wrapped under the password-derived key."""
    username, password = _credentials()
    if not USERNAME_RE.fullmatch(username):
        fail(400, "invalid_username", "Usernames are 3-32 of A-Z a-z 0-9 _ . -")
    if len(password) < MIN_PASSWORD:
        fail(400, "invalid_password", f"Passwords are at least {MIN_PASSWORD} characters.")
    user_id = uuid.uuid4().hex
    params, salt, data_key = kdf_params(), os.urandom(16), crypto.new_key()
    kek = _derive(password, salt, params)
    wrapped = crypto.seal(kek, data_key, _user_key_ad(user_id))
    user = store.User(user_id, username, params.encode(), salt, wrapped)
    try:
        store.create_user(store.get_db(), user, iso())
    except store.UsernameTaken:
        fail(409, "username_taken", "That username is taken.")
    return jsonify(username=username), 201


def _unlock(username: str, password: str) -> tuple[store.User, bytes] | None:
    """Return the user and their data key, or None; the KDF runs either way."""
    user = store.find_user(store.get_db(), username) if USERNAME_RE.fullmatch(username) else None
    if user is None:
        # Same work for an unknown user as for a wrong password: no timing oracle.
        _derive(password, _SENTINEL_SALT, kdf_params())
        return None
    kek = _derive(password, user.salt, crypto.KdfParams.decode(user.kdf))
    try:
        return user, crypto.open_(kek, user.wrapped_key, _user_key_ad(user.id))
    except DecryptionError:
        return None


def _upgrade_kdf(user: store.User, password: str, data_key: bytes) -> bool:
    """Re-wrap the data key when it was wrapped at a lower cost than configured."""
    wanted = kdf_params()
    if not crypto.KdfParams.decode(user.kdf).weaker_than(wanted):
        return False
    salt = os.urandom(16)
    kek = _derive(password, salt, wanted)
    wrapped = crypto.seal(kek, data_key, _user_key_ad(user.id))
    store.rewrap_user_key(store.get_db(), user.id, wanted.encode(), salt, wrapped)
    return True


@bp.post("/login")
def login() -> Response:
    """Check the password by unwrapping the data key, then start a fresh session."""
    # Counted before the body is even checked: malformed guesses cost a unit too.
    with limits.login_attempt(_named_in_body()):
        username, password = _credentials()
        unlocked = _unlock(username, password)
        if unlocked is None:
            fail(401, "invalid_credentials", "Wrong username or password.")
    user, data_key = unlocked
    rewrapped = _upgrade_kdf(user, password, data_key)
    db = store.get_db()
    earlier = _presented_token()
    if earlier is not None:
        # A fresh session on every login: an earlier (possibly planted) one is revoked.
        store.delete_session(db, crypto.token_hash(earlier))
    token, t = crypto.new_token(), now()
    wrapped = crypto.seal(crypto.session_wrap_key(token), data_key, _session_key_ad(user.id))
    store.create_session(db, crypto.token_hash(token), user.id, wrapped, t)
    cfg = current_app.config
    ended = store.delete_stale_sessions(db, t - cfg["SESSION_IDLE_TIMEOUT"],
                                        t - cfg["SESSION_ABSOLUTE_TIMEOUT"])
    # A bounded number of live sessions per user: logging in in a loop cannot grow them.
    ended += store.keep_recent_sessions(db, user.id, int(cfg["MAX_SESSIONS_PER_USER"]))
    if rewrapped or earlier is not None or ended:
        scrub.now(db)  # the old wraps are gone from every file before the answer
    response = jsonify(username=user.username, csrf_token=crypto.csrf_token(token))
    response.set_cookie(
        cookie_name(), _signer().sign(token).decode("ascii"),
        max_age=int(cfg["SESSION_ABSOLUTE_TIMEOUT"]), path="/", httponly=True,
        samesite="Lax", secure=bool(cfg["HTTPS"]),
    )
    return response


@bp.get("/session")
@login_required
def session() -> Response:
    """Tell the client who is logged in and the CSRF token to send."""
    return jsonify(username=g.username, csrf_token=g.csrf)


@bp.post("/logout")
def logout() -> Response:
    """Delete the session server-side, so a replayed cookie is refused everywhere."""
    optional_json_body()
    if load_session():
        check_csrf()
        store.delete_session(store.get_db(), g.token_digest)
        scrub.now(store.get_db())  # nothing of the session left in any file
    response = Response(status=204)
    response.delete_cookie(cookie_name(), path="/", httponly=True, samesite="Lax",
                           secure=bool(current_app.config["HTTPS"]))
    return response
