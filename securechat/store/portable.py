"""The queries of export, import and search: a user's history read and written in batches.

Reads page by keyset (never OFFSET), so each batch costs the same however far in; writes
of an import go to conversations marked ``pending`` (invisible to every other query) and
are shown in one short transaction at the end (:func:`reveal_import`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .conversations import _CONVERSATION, Conversation, Message, _conversation
from .database import Database, transaction

# (created_at, id) of the last conversation of the previous batch.
AgeCursor = tuple[str, str]


def conversations_by_age(db: Database, user_id: str, after: AgeCursor | None,
                         limit: int) -> list[Conversation]:
    """The user's next ``limit`` conversations, oldest first (what an export walks)."""
    where, args = ("", ()) if after is None else (" AND (created_at, id) > (?, ?)", after)
    rows = db.execute(
        f"{_CONVERSATION} WHERE user_id = ? AND pending IS NULL{where}"  # noqa: S608
        " ORDER BY created_at, id LIMIT ?", (user_id, *args, limit)).fetchall()
    return [_conversation(row) for row in rows]


def newest_conversations(db: Database, user_id: str, before: AgeCursor | None,
                         limit: int) -> list[Conversation]:
    """The user's next ``limit`` conversations, newest first (what search walks).

    By creation, which never changes: a conversation that gets a message while someone
    pages through results keeps its place (by activity it would jump the cursor).
    """
    where, args = ("", ()) if before is None else (" AND (created_at, id) < (?, ?)", before)
    rows = db.execute(
        f"{_CONVERSATION} WHERE user_id = ? AND pending IS NULL{where}"  # noqa: S608
        " ORDER BY created_at DESC, id DESC LIMIT ?", (user_id, *args, limit)).fetchall()
    return [_conversation(row) for row in rows]


_MESSAGE = "SELECT id, position, role, content, created_at, status FROM messages"


def messages_after(db: Database, conv_id: str, after: int, limit: int) -> list[Message]:
    """Up to ``limit`` messages after position ``after`` (-1: from the first), oldest first."""
    rows = db.execute(f"{_MESSAGE} WHERE conversation_id = ? AND position > ?"  # noqa: S608
                      " ORDER BY position LIMIT ?", (conv_id, after, limit)).fetchall()
    return [Message(*row) for row in rows]


def messages_before(db: Database, conv_id: str, before: int, limit: int) -> list[Message]:
    """Up to ``limit`` messages before position ``before``, newest first."""
    rows = db.execute(f"{_MESSAGE} WHERE conversation_id = ? AND position < ?"  # noqa: S608
                      " ORDER BY position DESC LIMIT ?", (conv_id, before, limit)).fetchall()
    return [Message(*row) for row in rows]


def stage_conversation(db: Database, user_id: str, pending: str, conv: Conversation,
                       count: int, messages: Sequence[Message]) -> None:
    """Write an imported conversation of ``count`` messages and the first of them, hidden."""
    with transaction(db):
        db.execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at, starred,"
            " titled, next_position, pending) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
            (conv.id, user_id, conv.title, conv.created_at, conv.updated_at, int(conv.starred),
             count, pending))
        add_messages(db, conv.id, messages)


def add_messages(db: Database, conv_id: str, messages: Sequence[Message]) -> None:
    """Insert messages (in the caller's transaction) of a staged conversation."""
    for m in messages:
        db.execute(
            "INSERT INTO messages (conversation_id, position, id, role, content, created_at,"
            " status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conv_id, m.position, m.id, m.role, m.content, m.created_at, m.status))


def reveal_import(db: Database, user_id: str, pending: str, updated_at: str) -> int:
    """Show every conversation of an import at once; return how many."""
    cur = db.execute("UPDATE conversations SET pending = NULL, updated_at = ?"
                     " WHERE user_id = ? AND pending = ?", (updated_at, user_id, pending))
    return cur.rowcount


def discard_import(db: Database, user_id: str, pending: str) -> None:
    """Delete what an import that failed had written."""
    with transaction(db):
        db.execute("DELETE FROM messages WHERE conversation_id IN (SELECT id FROM"
                   " conversations WHERE user_id = ? AND pending = ?)", (user_id, pending))
        db.execute("DELETE FROM conversations WHERE user_id = ? AND pending = ?",
                   (user_id, pending))


def discard_stale_imports(db: Database, started_before: str) -> int:
    """Delete what imports started before ``started_before`` left (a process died mid-way)."""
    with transaction(db):
        db.execute("DELETE FROM messages WHERE conversation_id IN (SELECT id FROM"
                   " conversations WHERE pending IS NOT NULL AND updated_at < ?)",
                   (started_before,))
        cur = db.execute("DELETE FROM conversations WHERE pending IS NOT NULL"
                         " AND updated_at < ?", (started_before,))
    return cur.rowcount
