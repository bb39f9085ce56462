"""Conversation and message queries: titles and contents stay ciphertext."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..records import COMPLETE
from .database import Database, transaction


@dataclass(frozen=True)
class Conversation:
    """A conversation row; the title is ciphertext. ``updated_at``: its last message's time."""

    id: str
    title: bytes
    created_at: str
    updated_at: str
    starred: bool


@dataclass(frozen=True)
class Message:
    """A message row; the content is ciphertext bound to (conversation, position, role)."""

    id: str
    position: int
    role: str
    content: bytes
    created_at: str
    status: str = COMPLETE


_CONVERSATION = "SELECT id, title, created_at, updated_at, starred FROM conversations"


def _conversation(row: tuple[str, bytes, str, str, int]) -> Conversation:
    return Conversation(row[0], row[1], row[2], row[3], bool(row[4]))


def create_conversation(db: Database, conv_id: str, user_id: str, title: bytes,
                        created_at: str, titled: bool = True) -> None:
    """Insert a conversation with its sealed title (``titled``: chosen by a person)."""
    db.execute(
        "INSERT INTO conversations (id, user_id, title, created_at, updated_at, titled)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (conv_id, user_id, title, created_at, created_at, int(titled)),
    )


def update_conversation(db: Database, user_id: str, conv_id: str, title: bytes | None,
                        starred: bool | None) -> bool:
    """Rename (the title is then the person's) and/or star; False when not the user's.

    ``updated_at`` stays: it is the time of the last message, not of the last edit.
    """
    sets: list[str] = []
    args: list[bytes | int] = []
    if title is not None:
        sets.append("title = ?, titled = 1")
        args.append(title)
    if starred is not None:
        sets.append("starred = ?")
        args.append(int(starred))
    if not sets:
        raise ValueError("nothing to update")
    cur = db.execute(f"UPDATE conversations SET {', '.join(sets)}"  # noqa: S608 - fixed text
                     " WHERE id = ? AND user_id = ? AND pending IS NULL",
                     (*args, conv_id, user_id))
    return cur.rowcount > 0


# Where a page of the list starts: after the conversation (starred, updated_at, id).
ListCursor = tuple[int, str, str]


def list_conversations(db: Database, user_id: str, limit: int,
                       after: ListCursor | None = None) -> list[Conversation]:
    """One page of the user's conversations: starred first, then latest activity, then id."""
    # A row-value comparison follows the index's order exactly (portable to PostgreSQL).
    where, args = ("", ()) if after is None else (
        " AND (starred, updated_at, id) < (?, ?, ?)", after)
    rows = db.execute(
        f"{_CONVERSATION} WHERE user_id = ? AND pending IS NULL{where}"  # noqa: S608
        " ORDER BY starred DESC, updated_at DESC, id DESC LIMIT ?",
        (user_id, *args, limit),
    ).fetchall()
    return [_conversation(row) for row in rows]


def get_conversation(db: Database, user_id: str, conv_id: str) -> Conversation | None:
    """Return the conversation if it exists *and* belongs to the user."""
    row = db.execute(f"{_CONVERSATION} WHERE id = ? AND user_id = ?"  # noqa: S608
                     " AND pending IS NULL", (conv_id, user_id)).fetchone()
    return _conversation(row) if row else None


def delete_conversation(db: Database, user_id: str, conv_id: str) -> bool:
    """Delete the user's conversation and its messages; False when there was none."""
    with transaction(db):
        db.execute(
            "DELETE FROM messages WHERE conversation_id IN"
            " (SELECT id FROM conversations WHERE id = ? AND user_id = ?"
            "  AND pending IS NULL)",
            (conv_id, user_id),
        )
        cur = db.execute("DELETE FROM conversations WHERE id = ? AND user_id = ?"
                         " AND pending IS NULL",
                         (conv_id, user_id))
    return cur.rowcount > 0


class Conflict(Exception):
    """The conversation changed since it was read (a message was added meanwhile)."""


@dataclass(frozen=True)
class Replace:
    """Where a new message goes instead of at the end: ``position``, deleting it and what
    follows, provided the conversation still ends where it did (``next_position``)."""

    position: int
    next_position: int


def append_message(db: Database, user_id: str, conv_id: str, msg_id: str,
                   role: str, seal: Callable[[int], bytes], created_at: str,
                   status: str = COMPLETE, replace: Replace | None = None,
                   default_title: Callable[[], bytes] | None = None) -> int | None:
    """Append a message at the next position, sealed by ``seal(position)``.

    Returns the position, or None when the conversation is not the user's. The UPDATE
    takes the position under a lock held until COMMIT (SQLite's write lock, PostgreSQL's
    lock on the conversation's row), so concurrent senders, from any process, get
    consecutive positions in commit order and never collide; a rolled-back send uses none.

    With ``replace`` the message takes ``replace.position`` and everything from there on
    is deleted first, in the same transaction (a regenerated reply, an edited message;
    positions are reused); :class:`Conflict` when a message arrived since. A message at
    position 0 also names a conversation no one has titled: ``default_title()``.
    """
    with transaction(db):
        if replace is None:
            cur = db.execute(
                "UPDATE conversations SET next_position = next_position + 1, updated_at = ?"
                " WHERE id = ? AND user_id = ? AND pending IS NULL",
                (created_at, conv_id, user_id))
        else:
            cur = db.execute(
                "UPDATE conversations SET next_position = ?, updated_at = ?"
                " WHERE id = ? AND user_id = ? AND next_position = ? AND pending IS NULL",
                (replace.position + 1, created_at, conv_id, user_id, replace.next_position))
        if cur.rowcount == 0:
            if replace is not None and get_conversation(db, user_id, conv_id) is not None:
                raise Conflict(conv_id)
            return None
        position = db.execute("SELECT next_position - 1 FROM conversations WHERE id = ?",
                              (conv_id,)).fetchone()[0]
        if replace is not None:
            db.execute("DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                       (conv_id, position))
        db.execute(
            "INSERT INTO messages (conversation_id, position, id, role, content, created_at,"
            " status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conv_id, position, msg_id, role, seal(position), created_at, status),
        )
        if default_title is not None and position == 0:
            db.execute("UPDATE conversations SET title = ? WHERE id = ? AND titled = 0",
                       (default_title(), conv_id))
    return position


def find_message(db: Database, conv_id: str, msg_id: str) -> int | None:
    """The position of message ``msg_id`` in the conversation, or None."""
    row = db.execute("SELECT position FROM messages WHERE conversation_id = ? AND id = ?",
                     (conv_id, msg_id)).fetchone()
    return None if row is None else int(row[0])


def delete_idle_conversations(db: Database, user_id: str, idle_before: str) -> int:
    """Delete the user's unstarred conversations with no message since ``idle_before``."""
    with transaction(db):
        db.execute(
            "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations"
            " WHERE user_id = ? AND starred = 0 AND updated_at < ? AND pending IS NULL)",
            (user_id, idle_before))
        cur = db.execute("DELETE FROM conversations WHERE user_id = ? AND starred = 0"
                         " AND updated_at < ? AND pending IS NULL", (user_id, idle_before))
    return cur.rowcount


def page_messages(db: Database, conv_id: str, limit: int,
                  before: int | None = None) -> list[Message]:
    """Return up to ``limit`` messages before position ``before``, oldest first."""
    return list(reversed(list(newest_messages(db, conv_id, limit, before))))


def newest_messages(db: Database, conv_id: str, limit: int,
                    before: int | None = None) -> Iterator[Message]:
    """Yield up to ``limit`` messages before position ``before``, newest first, one by one.

    Rows are read as they are asked for: a caller that stops early reads no more.
    """
    cursor = db.execute(
        "SELECT id, position, role, content, created_at, status FROM messages"
        " WHERE conversation_id = ? AND position < ? ORDER BY position DESC LIMIT ?",
        (conv_id, 2**62 if before is None else before, limit),
    )
    try:
        for row in cursor:
            yield Message(*row)
    finally:
        cursor.close()
