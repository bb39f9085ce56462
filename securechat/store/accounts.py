"""Account queries: re-wrapping keys (compare-and-swap), sessions by id, settings, deletion."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database, transaction


@dataclass(frozen=True)
class SessionRow:
    """A session as its owner's list shows it (never its token or the token's hash)."""

    id: str
    created_at: float
    last_seen: float
    details: bytes | None
    token_hash: bytes


def replace_keys(db: Database, user_id: str, version: int, kdf: str, salt: bytes,
                 wrapped_key: bytes, recovery_salt: bytes | None,
                 recovery_wrap: bytes | None) -> bool:
    """Replace the password wrap and the recovery wrap together, if ``version`` is current.

    False when another change came first (a password changed meanwhile): nothing is
    written, so an account never ends up half re-wrapped.
    """
    cur = db.execute(
        "UPDATE users SET kdf = ?, salt = ?, wrapped_key = ?, recovery_salt = ?,"
        " recovery_wrap = ?, key_version = key_version + 1 WHERE id = ? AND key_version = ?",
        (kdf, salt, wrapped_key, recovery_salt, recovery_wrap, user_id, version))
    return cur.rowcount == 1


def replace_recovery(db: Database, user_id: str, version: int, salt: bytes,
                     wrap: bytes) -> bool:
    """Replace the recovery wrap (the old code stops working), if ``version`` is current."""
    cur = db.execute(
        "UPDATE users SET recovery_salt = ?, recovery_wrap = ?, key_version = key_version + 1"
        " WHERE id = ? AND key_version = ?", (salt, wrap, user_id, version))
    return cur.rowcount == 1


def list_sessions(db: Database, user_id: str) -> list[SessionRow]:
    """The user's live sessions, newest first."""
    rows = db.execute(
        "SELECT id, created_at, last_seen, details, token_hash FROM sessions"
        " WHERE user_id = ? ORDER BY created_at DESC, id DESC", (user_id,)).fetchall()
    return [SessionRow(*row) for row in rows]


def delete_session_by_id(db: Database, user_id: str, session_id: str) -> bool:
    """Revoke one of the user's sessions by its id; False when there is none such."""
    cur = db.execute("DELETE FROM sessions WHERE user_id = ? AND id = ?", (user_id, session_id))
    return cur.rowcount > 0


def delete_other_sessions(db: Database, user_id: str, keep: bytes | None) -> int:
    """Revoke every session of the user but the one with token hash ``keep`` (None: all)."""
    if keep is None:
        cur = db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
    else:
        cur = db.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?",
                         (user_id, keep))
    return cur.rowcount


def set_retention(db: Database, user_id: str, days: int | None) -> None:
    """Keep conversations forever (None), or delete unstarred ones idle for ``days``."""
    db.execute("UPDATE users SET retention_days = ? WHERE id = ?", (days, user_id))


def delete_user(db: Database, user_id: str) -> None:
    """Crypto-shred the account, then delete every row of it.

    The wraps of the data key go first, in a commit of their own: whatever happens to the
    rest, no key that opens the user's records is left. Then the records themselves.
    """
    with transaction(db):
        db.execute("UPDATE users SET salt = ?, wrapped_key = ?, recovery_salt = NULL,"
                   " recovery_wrap = NULL, event_mac = NULL WHERE id = ?", (b"", b"", user_id))
        db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
    with transaction(db):
        db.execute("DELETE FROM messages WHERE conversation_id IN"
                   " (SELECT id FROM conversations WHERE user_id = ?)", (user_id,))
        db.execute("DELETE FROM conversations WHERE user_id = ?", (user_id,))
        db.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
