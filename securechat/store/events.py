"""The security log: one chain of events per user, each row carrying its chain's MAC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .database import Database, transaction


@dataclass(frozen=True)
class Event:
    """One stored event: what, when, its sealed details, and the chain's MAC up to it."""

    seq: int
    type: str
    at: str
    details: bytes | None
    mac: bytes


# Computes an event's MAC from the previous one's and the event's own fields.
Chainer = Callable[[bytes, int, str, str, bytes | None], bytes]
# Computes the head kept on the user row from the event count and the last event's MAC.
Header = Callable[[int, bytes], bytes]


def append_event(db: Database, user_id: str, type_: str, at: str,
                 details_for: Callable[[int], bytes | None], chain: Chainer,
                 head: Header) -> int:
    """Append an event to the user's log and move the chain's head; return its number.

    Joins the caller's transaction when there is one: the event commits with its action.
    """
    with transaction(db):
        # Counting up first takes the user row's write lock (PostgreSQL's row lock, SQLite's
        # database lock): two processes logging in at once cannot both take the same number.
        if db.execute("UPDATE users SET event_count = event_count + 1 WHERE id = ?",
                      (user_id,)).rowcount == 0:
            return 0  # the account is gone: nothing to record it in
        row = db.execute("SELECT event_count FROM users WHERE id = ?", (user_id,)).fetchone()
        seq = int(row[0])
        last = db.execute("SELECT mac FROM events WHERE user_id = ? AND seq = ?",
                          (user_id, seq - 1)).fetchone()
        details = details_for(seq)
        mac = chain(last[0] if last else b"", seq, type_, at, details)
        db.execute("INSERT INTO events (user_id, seq, type, at, details, mac)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (user_id, seq, type_, at, details, mac))
        db.execute("UPDATE users SET event_mac = ? WHERE id = ?", (head(seq, mac), user_id))
    return seq


def list_events(db: Database, user_id: str, limit: int,
                before: int | None = None) -> list[Event]:
    """Up to ``limit`` of the user's events before number ``before``, newest first."""
    rows = db.execute(
        "SELECT seq, type, at, details, mac FROM events WHERE user_id = ? AND seq < ?"
        " ORDER BY seq DESC LIMIT ?", (user_id, 2**62 if before is None else before, limit),
    ).fetchall()
    return [Event(*row) for row in rows]


def chain_head(db: Database, user_id: str) -> tuple[int, bytes | None]:
    """How many events the user row says there are, and the head sealed over the last MAC."""
    row = db.execute("SELECT event_count, event_mac FROM users WHERE id = ?",
                     (user_id,)).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def user_ids(db: Database) -> list[tuple[str, str]]:
    """Every account's id and name (for the audit)."""
    return [(row[0], row[1]) for row in
            db.execute("SELECT id, username FROM users ORDER BY username_key").fetchall()]
