"""Register, log in, log out: the password unwraps the user's data key, or nothing does."""

from __future__ import annotations

import os
import uuid

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import crypto, offload, records, store
from ..errors import DecryptionError
from ..protocol import MAX_PASSWORD, MIN_PASSWORD, USERNAME_RE
from . import capacity, limits, sessions
from .http import fail, json_body, optional_json_body, string_field

bp = Blueprint("auth", __name__, url_prefix="/api")

_SENTINEL_SALT = b"securechat-unknown-user-salt"


def kdf_params() -> crypto.KdfParams:
    """The configured KDF cost for new and upgraded password wraps."""
    return current_app.extensions["securechat.settings"].kdf_params()


def _derive(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
    """Run the password KDF, at most ``KDF_CONCURRENCY`` at once (503 when none frees soon).

    Each scrypt run holds 128 MiB: without a cap, a burst of logins multiplies that; and a
    request waiting for a slot holds a worker, so the wait is short and the queue bounded.
    """
    with capacity.kdf_slot():
        # Seconds of CPU: under `serve` (gevent) it runs in a worker thread, so every other
        # request and stream goes on meanwhile.
        return offload.blocking(crypto.derive_kek, password, salt, params)


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
    wrapped = crypto.seal(kek, data_key, records.user_key_ad(user_id))
    user = store.User(user_id, username, params.encode(), salt, wrapped)
    try:
        store.create_user(store.get_db(), user, sessions.iso())
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
        return user, crypto.open_(kek, user.wrapped_key, records.user_key_ad(user.id))
    except DecryptionError:
        return None


def _upgrade_kdf(user: store.User, password: str, data_key: bytes) -> bool:
    """Re-wrap the data key when it was wrapped at a lower cost than configured."""
    wanted = kdf_params()
    if not crypto.KdfParams.decode(user.kdf).weaker_than(wanted):
        return False
    salt = os.urandom(16)
    kek = _derive(password, salt, wanted)
    wrapped = crypto.seal(kek, data_key, records.user_key_ad(user.id))
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
    if rewrapped or earlier is not None or ended:
        store.scrub.now(db)  # the old wraps are gone from every file before the answer
    response = jsonify(username=user.username, csrf_token=csrf)
    sessions.set_cookie(response, cookie)
    return response


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
        store.scrub.now(store.get_db())  # nothing of the session left in any file
    response = Response(status=204)
    sessions.clear_cookie(response)
    return response
