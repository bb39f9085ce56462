"""The at-rest record format: the associated data that names what each ciphertext is.

Every sealed value is bound to what it is and whose it is. A ciphertext copied onto
another row, another position, another role or another user fails its AEAD check, so
these builders are the one place that says what a record is; the server, the tests, the
benchmarks and the notebooks all build associated data here.
"""

from __future__ import annotations

import json

FORMAT_VERSION = 1
COMPLETE, INCOMPLETE = "complete", "incomplete"


def record_ad(kind: str, **fields: str | int | None) -> bytes:
    """Canonical associated data naming a record (JSON, sorted keys: unambiguous)."""
    return json.dumps({"v": FORMAT_VERSION, "kind": kind, **fields}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def user_key_ad(user_id: str) -> bytes:
    """A user's data key wrapped under their password-derived key."""
    return record_ad("user-key", user=user_id)


def session_key_ad(user_id: str) -> bytes:
    """A user's data key wrapped under a session token's key."""
    return record_ad("session-key", user=user_id)


def recovery_key_ad(user_id: str) -> bytes:
    """A user's data key wrapped under their recovery code's key."""
    return record_ad("recovery-key", user=user_id)


def session_details_ad(user_id: str, session_id: str) -> bytes:
    """What a session shows its owner: the browser and address it came from."""
    return record_ad("session-details", user=user_id, session=session_id)


def event_details_ad(user_id: str, seq: int) -> bytes:
    """The details of one security-log event (the address of a login)."""
    return record_ad("event-details", user=user_id, seq=seq)


def title_ad(user_id: str, conversation_id: str) -> bytes:
    """A conversation's title."""
    return record_ad("title", user=user_id, conversation=conversation_id)


def message_ad(user_id: str, conversation_id: str, position: int, role: str,
               status: str = COMPLETE) -> bytes:
    """A message: its place in the conversation, its author, and whether it is whole.

    An incomplete reply is bound to that status (flipping the flag breaks the record);
    complete ones keep the first format's associated data, so older rows still open.
    """
    extra = {"status": status} if status != COMPLETE else {}
    return record_ad("message", user=user_id, conversation=conversation_id,
                     position=position, role=role, **extra)
