"""Your data, your keys: change the password, recover with a code, settings, deletion.

The server cannot reset what it cannot read, so these are the user's only safety net.
Each re-wraps the one data key (no message is touched), in one transaction that either
lands whole or not at all (a compare-and-swap on the key version: of two changes at once,
one wins, the other is a 409), revokes what must not outlive it, and leaves no old wrap
in the files. Every route that checks a password shares the login limits; recovery has
buckets of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, g, jsonify

from .. import recovery, store
from . import eventlog, keys, limits, sessions
from .auth import named_in_body
from .http import fail, json_body, string_field
from .sessions import login_required

bp = Blueprint("account", __name__, url_prefix="/api/account")

MAX_RETENTION_DAYS = 3650


def _check_password(password: str) -> tuple[store.User, bytes]:
    """The session user's record and data key, if ``password`` is theirs; 401 otherwise.

    A wrong password here ends nothing (the session stays) but counts as a failed login.
    """
    with limits.login_attempt(g.username):
        unlocked = keys.unlock(g.username, password)
        if unlocked is None:
            eventlog.record("login_failed")
            fail(401, "invalid_credentials", "That password is not right.")
    return unlocked


def _conflict() -> None:
    fail(409, "conflict", "Your keys changed meanwhile (another device?); try again.")


@contextmanager
def _new_keys(user: store.User, data_key: bytes, password: str,
              keep: bytes | None) -> Iterator[str]:
    """Wrap the data key under ``password`` and a fresh recovery code, as one change.

    Yields the new code inside the transaction (the caller adds its event, or a session),
    after every session but ``keep`` has ended; the old wraps leave the files on the way out.
    Both wraps are computed before the transaction: the KDF never runs holding the lock.
    """
    code = recovery.new_code()
    kdf, salt, wrapped = keys.wrap_password(user.id, password, data_key)
    recovery_salt, recovery_wrap = keys.wrap_recovery(user.id, data_key, code)
    db = store.get_db()
    with store.transaction(db):
        if not store.accounts.replace_keys(db, user.id, user.key_version, kdf, salt, wrapped,
                                           recovery_salt, recovery_wrap):
            _conflict()
        store.accounts.delete_other_sessions(db, user.id, keep)
        yield code
    store.scrub.now(db)


@bp.post("/password")
@login_required
def change_password() -> Response:
    """Re-wrap the data key under a new password; rotate the recovery code; end other sessions."""
    data = json_body()
    current = string_field(data, "current_password")
    new = string_field(data, "new_password")
    keys.check_new_password(new, "new_password")
    user, data_key = _check_password(current)
    # Whoever knew the old password keeps no way in: their sessions end too.
    with _new_keys(user, data_key, new, keep=g.token_digest) as code:
        eventlog.record("password_changed")
    return jsonify(recovery_code=code)


@bp.post("/recovery-code")
@login_required
def new_recovery_code() -> Response:
    """A new recovery code, shown once; the previous one stops working."""
    user, data_key = _check_password(string_field(json_body(), "password"))
    code = recovery.new_code()
    salt, wrap = keys.wrap_recovery(user.id, data_key, code)
    db = store.get_db()
    with store.transaction(db):
        if not store.accounts.replace_recovery(db, user.id, user.key_version, salt, wrap):
            _conflict()
        eventlog.record("recovery_code_regenerated")
    store.scrub.now(db)
    return jsonify(recovery_code=code)


@bp.post("/recover")
def recover() -> Response:
    """Set a new password with the recovery code; every earlier session ends.

    No session needed (the password is forgotten). The used code dies; a new one is shown.
    A code is never enough to log in by itself: it only sets a new password.
    """
    with limits.recovery_attempt(named_in_body()):
        data = json_body()
        username = string_field(data, "username")
        typed = string_field(data, "recovery_code")
        new = string_field(data, "new_password")
        keys.check_new_password(new, "new_password")
        try:
            secret = recovery.parse_code(typed)  # a typo is caught before any lookup
        except ValueError as e:
            fail(400, "invalid_recovery_code", str(e))
        unlocked = keys.unlock_with_code(username, secret)
        if unlocked is None:
            fail(401, "invalid_credentials", "Wrong username or recovery code.")
    user, data_key = unlocked
    with _new_keys(user, data_key, new, keep=None) as code:
        cookie, csrf = sessions.start(user.id, data_key)
        eventlog.record("recovered", user.id, data_key, address=True)
    response = jsonify(username=user.username, csrf_token=csrf, recovery_code=code)
    sessions.set_cookie(response, cookie)
    return response


@bp.delete("")
@login_required
def delete_account() -> Response:
    """Delete the account: every wrap of its key first, then every row, then the files."""
    user, _ = _check_password(string_field(json_body(), "password"))
    db = store.get_db()
    store.accounts.delete_user(db, user.id)
    store.scrub.now(db)
    response = Response(status=204)
    sessions.clear_cookie(response)
    return response


@bp.get("/settings")
@login_required
def settings() -> Response:
    """The user's settings."""
    user = store.get_user(store.get_db(), g.user_id)
    return jsonify(_settings(user))


@bp.patch("/settings")
@login_required
def change_settings() -> Response:
    """Change settings: ``retention_days`` (null: keep forever, or 1-3650)."""
    data = json_body()
    unknown = set(data) - {"retention_days"}
    if unknown or not data:
        fail(400, "invalid_field", "Settings take only 'retention_days'.")
    days = data["retention_days"]
    if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                             or not 1 <= days <= MAX_RETENTION_DAYS):
        fail(400, "invalid_field", f"'retention_days' is null (keep forever) or 1 to "
             f"{MAX_RETENTION_DAYS}.")
    db = store.get_db()
    with store.transaction(db):
        store.accounts.set_retention(db, g.user_id, days)
        eventlog.record("settings_changed")
    return jsonify(_settings(store.get_user(db, g.user_id)))


def _settings(user: store.User | None) -> dict[str, Any]:
    return {"retention_days": None if user is None else user.retention_days}
