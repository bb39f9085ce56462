"""The user's keys: the password (and the recovery code) unwraps the data key, or nothing does.

Every wrap of the data key goes through here: under a key derived from the password by
the memory-hard KDF (at most ``KDF_CONCURRENCY`` runs at once, off the event loop), and
under a key derived from the recovery code by HKDF (128 random bits need no stretching).
"""

from __future__ import annotations

import os

from flask import current_app

from .. import crypto, offload, records, recovery, store
from ..errors import DecryptionError
from ..protocol import MAX_PASSWORD, MIN_PASSWORD, USERNAME_RE
from . import capacity
from .http import fail

_SENTINEL_SALT = b"securechat-unknown-user-salt"
_RECOVERY_INFO = b"securechat/v1/recovery"


def kdf_params() -> crypto.KdfParams:
    """The configured KDF and cost, for new and upgraded password wraps."""
    return current_app.extensions["securechat.settings"].kdf_params()


def derive(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
    """Run the password KDF, at most ``KDF_CONCURRENCY`` at once (503 when none frees soon).

    A burst of logins must not multiply the KDF's memory, and a request waiting for a slot
    holds a connection: the wait is short and the queue bounded.
    """
    with capacity.kdf_slot():
        # Tens to hundreds of milliseconds of CPU: under `serve` (gevent) it runs in a
        # worker thread, so every other request and stream goes on meanwhile.
        return offload.blocking(crypto.derive_kek, password, salt, params)


def check_new_password(password: str, field: str = "password") -> None:
    """Refuse (400) a password outside the rules, saying the rule."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        fail(400, "invalid_password", f"'{field}': passwords are {MIN_PASSWORD} to "
             f"{MAX_PASSWORD} characters.")


def wrap_password(user_id: str, password: str, data_key: bytes) -> tuple[str, bytes, bytes]:
    """Wrap the data key under ``password``: (the KDF and cost, a fresh salt, the wrap)."""
    params, salt = kdf_params(), os.urandom(16)
    wrapped = crypto.seal(derive(password, salt, params), data_key,
                          records.user_key_ad(user_id))
    return params.encode(), salt, wrapped


def wrap_recovery(user_id: str, data_key: bytes, code: str) -> tuple[bytes, bytes]:
    """Wrap the data key under a recovery code: (a fresh salt, the wrap)."""
    salt = os.urandom(16)
    key = crypto.derive_from_secret(recovery.parse_code(code), salt, _RECOVERY_INFO)
    return salt, crypto.seal(key, data_key, records.recovery_key_ad(user_id))


def unlock(username: str, password: str) -> tuple[store.User, bytes] | None:
    """The user and their data key, or None; the KDF runs either way (no timing oracle)."""
    user = store.find_user(store.get_db(), username) if USERNAME_RE.fullmatch(username) else None
    if user is None:
        derive(password, _SENTINEL_SALT, kdf_params())
        return None
    kek = derive(password, user.salt, crypto.KdfParams.decode(user.kdf))
    try:
        return user, crypto.open_(kek, user.wrapped_key, records.user_key_ad(user.id))
    except DecryptionError:
        return None


def unlock_with_code(username: str, secret: bytes) -> tuple[store.User, bytes] | None:
    """The user and their data key from a recovery code's secret bytes, or None."""
    user = store.find_user(store.get_db(), username) if USERNAME_RE.fullmatch(username) else None
    salt = user.recovery_salt if user is not None else _SENTINEL_SALT
    key = crypto.derive_from_secret(secret, salt or _SENTINEL_SALT, _RECOVERY_INFO)
    if user is None or user.recovery_wrap is None:
        return None
    try:
        return user, crypto.open_(key, user.recovery_wrap, records.recovery_key_ad(user.id))
    except DecryptionError:
        return None


def upgrade_kdf(user: store.User, password: str, data_key: bytes) -> bool:
    """Re-wrap the data key when it was wrapped by scrypt or at a lower cost than configured."""
    if not crypto.KdfParams.decode(user.kdf).weaker_than(kdf_params()):
        return False
    kdf, salt, wrapped = wrap_password(user.id, password, data_key)
    store.rewrap_user_key(store.get_db(), user.id, kdf, salt, wrapped)
    return True
