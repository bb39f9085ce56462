"""User and session queries: accounts by name or id, their wrapped keys, login sessions."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


class UsernameTaken(Exception):
    """The username (ignoring case) already exists."""


@dataclass(frozen=True)
class User:
    """A stored account; the data key exists only wrapped (by the password, the recovery code).

    ``key_version`` grows with every re-wrap: a change made from a stale read is refused.
    """

    id: str
    username: str
    kdf: str
    salt: bytes
    wrapped_key: bytes
    recovery_salt: bytes | None = None
    recovery_wrap: bytes | None = None
    key_version: int = 0
    retention_days: int | None = None


_USER = ("SELECT id, username, kdf, salt, wrapped_key, recovery_salt, recovery_wrap,"
         " key_version, retention_days FROM users")


@dataclass(frozen=True)
class Session:
    """A stored session: the token's hash and the data key wrapped under the token.

    ``id`` names it to its owner (never the token or its hash); ``details`` (the browser
    and the address it came from) are sealed under the owner's data key.
    """

    user_id: str
    username: str
    wrapped_key: bytes
    created_at: float
    last_seen: float
    id: str = ""
    details: bytes | None = None


def create_user(db: Database, user: User, created_at: str) -> None:
    """Insert a user; raise UsernameTaken when the name exists ignoring case."""
    try:
        db.execute(
            "INSERT INTO users (id, username, username_key, kdf, salt, wrapped_key,"
            " recovery_salt, recovery_wrap, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user.id, user.username, user.username.lower(), user.kdf, user.salt,
             user.wrapped_key, user.recovery_salt, user.recovery_wrap, created_at),
        )
    except db.IntegrityError as e:
        # The unique index on username_key refused it: the name was already taken.
        raise UsernameTaken(user.username) from e


def find_user(db: Database, username: str) -> User | None:
    """Return the user with this name (ignoring case), or None."""
    row = db.execute(f"{_USER} WHERE username_key = ?",  # noqa: S608 - fixed text
                     (username.lower(),)).fetchone()
    return User(*row) if row else None


def get_user(db: Database, user_id: str) -> User | None:
    """Return the user with this id, or None."""
    row = db.execute(f"{_USER} WHERE id = ?", (user_id,)).fetchone()  # noqa: S608
    return User(*row) if row else None


def rewrap_user_key(db: Database, user_id: str, kdf: str, salt: bytes,
                    wrapped_key: bytes) -> None:
    """Replace a user's wrapped data key (password change or KDF cost upgrade)."""
    db.execute("UPDATE users SET kdf = ?, salt = ?, wrapped_key = ? WHERE id = ?",
               (kdf, salt, wrapped_key, user_id))


# --- sessions ----------------------------------------------------------------

def create_session(db: Database, token_hash: bytes, user_id: str,
                   wrapped_key: bytes, now: float, session_id: str,
                   details: bytes | None = None) -> None:
    """Store a new session row (the token itself is never stored)."""
    db.execute(
        "INSERT INTO sessions (token_hash, user_id, wrapped_key, created_at, last_seen, id,"
        " details) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (token_hash, user_id, wrapped_key, now, now, session_id, details),
    )


def get_session(db: Database, token_hash: bytes) -> Session | None:
    """Return the session for this token hash, or None."""
    row = db.execute(
        "SELECT s.user_id, u.username, s.wrapped_key, s.created_at, s.last_seen, s.id,"
        " s.details FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return Session(*row) if row else None


def touch_session(db: Database, token_hash: bytes, now: float) -> None:
    """Record activity on a session (for the idle timeout)."""
    db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, token_hash))


def delete_session(db: Database, token_hash: bytes) -> None:
    """Revoke one session everywhere."""
    db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))


def keep_recent_sessions(db: Database, user_id: str, keep: int) -> int:
    """Delete all but the user's ``keep`` most recently used sessions; return how many."""
    cur = db.execute(
        "DELETE FROM sessions WHERE user_id = ? AND token_hash NOT IN"
        " (SELECT token_hash FROM sessions WHERE user_id = ?"
        "  ORDER BY last_seen DESC, created_at DESC LIMIT ?)",
        (user_id, user_id, keep),
    )
    return cur.rowcount


def delete_stale_sessions(db: Database, idle_before: float,
                          created_before: float) -> int:
    """Delete sessions past their idle or absolute timeout; return how many."""
    cur = db.execute("DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
                     (idle_before, created_before))
    return cur.rowcount



def retention_policies(db: Database) -> list[tuple[str, int]]:
    """Every user who keeps conversations for a number of days: (user id, days)."""
    return [(row[0], int(row[1])) for row in db.execute(
        "SELECT id, retention_days FROM users WHERE retention_days IS NOT NULL").fetchall()]
