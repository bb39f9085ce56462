"""Register, log in, log out: the password unwraps the user's data key, or nothing does."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import crypto, recovery, store
from ..protocol import MAX_PASSWORD, USERNAME_RE
from . import eventlog, keys, limits, maintenance, sessions
from .http import fail, json_body, optional_json_body, string_field

bp = Blueprint("auth", __name__, url_prefix="/api")


def _credentials() -> tuple[str, str]:
    data = json_body()
    username = string_field(data, "username")
    password = string_field(data, "password")
    if len(password) > MAX_PASSWORD:
        fail(400, "invalid_password", f"Passwords are at most {MAX_PASSWORD} characters.")
    return username, password


def named_in_body() -> object:
    """The ``username`` a request body names, if it names one (for its rate-limit key)."""
    data = request.get_json(silent=True) if request.mimetype == "application/json" else None
    return data.get("username") if isinstance(data, dict) else None


@bp.post("/register")
def register() -> tuple[Response, int]:
    """Create an account: a random data key, wrapped by the password and a recovery code.

    The recovery code is shown this once; the server keeps only its wrap of the key.
    """
    username, password = _credentials()
    if not USERNAME_RE.fullmatch(username):
        fail(400, "invalid_username", "Usernames are 3-32 of A-Z a-z 0-9 _ . -")
    keys.check_new_password(password)
    user_id, data_key, code = uuid.uuid4().hex, crypto.new_key(), recovery.new_code()
    kdf, salt, wrapped = keys.wrap_password(user_id, password, data_key)
    recovery_salt, recovery_wrap = keys.wrap_recovery(user_id, data_key, code)
    user = store.User(user_id, username, kdf, salt, wrapped, recovery_salt, recovery_wrap)
    try:
        store.create_user(store.get_db(), user, sessions.iso())
    except store.UsernameTaken:
        fail(409, "username_taken", "That username is taken.")
    return jsonify(username=username, recovery_code=code), 201


@bp.post("/login")
def login() -> Response:
    """Check the password by unwrapping the data key, then start a fresh session."""
    # Counted before the body is even checked: malformed guesses cost a unit too.
    with limits.login_attempt(named_in_body()):
        username, password = _credentials()
        unlocked = keys.unlock(username, password)
        if unlocked is None:
            _failed_login(username)
            fail(401, "invalid_credentials", "Wrong username or password.")
    user, data_key = unlocked
    rewrapped = keys.upgrade_kdf(user, password, data_key)
    db = store.get_db()
    earlier = sessions.presented_token()
    if earlier is not None:
        # A fresh session on every login: an earlier (possibly planted) one is revoked.
        store.delete_session(db, crypto.token_hash(earlier))
    cookie, csrf = sessions.start(user.id, data_key)
    cfg, t = current_app.config, sessions.now()
    ended = store.delete_stale_sessions(db, t - cfg["SESSION_IDLE_TIMEOUT"],
                                        t - cfg["SESSION_ABSOLUTE_TIMEOUT"])
    # A bounded number of live sessions per user: logging in in a loop cannot grow them.
    ended += store.keep_recent_sessions(db, user.id, int(cfg["MAX_SESSIONS_PER_USER"]))
    # The user's retention applies now too, not only at the next sweep.
    expired = maintenance.expire_conversations(db, t, user.id, user.retention_days)
    eventlog.record("login", user.id, data_key, address=True)
    if rewrapped or earlier is not None or ended or expired:
        store.scrub.now(db)  # the old wraps are gone from every file before the answer
    response = jsonify(username=user.username, csrf_token=csrf)
    sessions.set_cookie(response, cookie)
    return response


def _failed_login(username: str) -> None:
    """A wrong password for an account that exists goes into its security log."""
    user = store.find_user(store.get_db(), username) if USERNAME_RE.fullmatch(username) else None
    if user is not None:
        eventlog.record("login_failed", user.id)


@bp.get("/session")
@sessions.login_required
def session() -> Response:
    """Tell the client who is logged in and the CSRF token to send."""
    return jsonify(username=g.username, csrf_token=g.csrf)


@bp.post("/logout")
def logout() -> Response:
    """Delete the session server-side, so a replayed cookie is refused everywhere."""
    optional_json_body()
    if sessions.load_session():
        sessions.check_csrf()
        store.delete_session(store.get_db(), g.token_digest)
        eventlog.record("logout")
        store.scrub.now(store.get_db())  # nothing of the session left in any file
    response = Response(status=204)
    sessions.clear_cookie(response)
    return response
