"""The security log: what happened to an account, and when; never what anyone wrote.

Each event is chained to the one before by an HMAC keyed from the server secret, and the
user row keeps the count and a MAC over it and the last event's: a row altered, deleted
from the middle or from the end, or a chain rebuilt without the secret, does not verify
(``python -m securechat audit verify``). A login's client address is sealed under the
user's data key, like everything else of theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from flask import current_app, g, request

from .. import crypto, records, store
from ..protocol import client_key
from .sessions import iso

TYPES = frozenset({"login", "login_failed", "logout", "password_changed",
                   "recovery_code_regenerated", "recovered", "session_revoked",
                   "sessions_revoked", "settings_changed", "import", "export"})


def chain_key(secret_key: str | bytes) -> bytes:
    """The MAC key of every chain, derived from the server secret (never the secret itself)."""
    secret = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    return crypto.derive_from_secret(secret, b"", b"securechat/v1/security-log")


def mac(key: bytes, user_id: str, previous: bytes, seq: int, type_: str, at: str,
        details: bytes | None) -> bytes:
    """An event's MAC: the previous MAC and every field of this event, unambiguously."""
    fields = json.dumps([user_id, seq, type_, at, (details or b"").hex()], separators=(",", ":"))
    return hmac.new(key, previous + fields.encode("utf-8"), hashlib.sha256).digest()


def head(key: bytes, user_id: str, count: int, last: bytes) -> bytes:
    """What the user row keeps: a MAC over the count and the last event's MAC.

    Not the last MAC itself: that one is in the events table too, so whoever deleted the
    newest events could copy an older row's MAC up; this they cannot compute.
    """
    fields = json.dumps(["head", user_id, count], separators=(",", ":"))
    return hmac.new(key, fields.encode("utf-8") + last, hashlib.sha256).digest()


def record(type_: str, user_id: str | None = None, data_key: bytes | None = None,
           address: bool = False) -> None:
    """Append an event for ``user_id`` (the session's user by default).

    With ``address`` (logins) and a data key, the client address is kept, sealed.
    """
    if type_ not in TYPES:
        raise ValueError(f"unknown security event {type_!r}")
    user = user_id or g.user_id
    key = data_key if data_key is not None else g.get("data_key")
    where = client_key(request.remote_addr) if address else None

    def details(seq: int) -> bytes | None:
        if where is None or key is None:
            return None
        plain = json.dumps({"address": where}).encode("utf-8")
        return crypto.seal(key, plain, records.event_details_ad(user, seq))

    secret = chain_key(current_app.config["SECRET_KEY"])
    store.events.append_event(
        store.get_db(), user, type_, iso(), details,
        lambda previous, seq, t, at, sealed: mac(secret, user, previous, seq, t, at, sealed),
        lambda count, last: head(secret, user, count, last))


def shown(user_id: str, data_key: bytes, event: store.events.Event) -> dict[str, Any]:
    """An event as its owner sees it: type, time, and the address of a login."""
    item: dict[str, Any] = {"type": event.type, "at": event.at}
    if event.details is not None:
        try:
            opened = crypto.open_(data_key, event.details,
                                  records.event_details_ad(user_id, event.seq))
            item.update(json.loads(opened))
        except crypto.DecryptionError:
            item["address"] = None  # a detail that does not open is not shown, nor guessed
    return item
