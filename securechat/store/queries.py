"""Every query: accounts, sessions, conversations and messages. Only ciphertext is stored.

The same SQL runs on SQLite and on PostgreSQL (:mod:`.postgres` adapts a psycopg
connection to what is used here). To stay portable, a query here:

* takes positional ``?`` placeholders only (PostgreSQL's adapter turns them into ``%s``),
  never a ``?`` or ``%`` inside an SQL string literal, never ``x IS ?``;
* uses no ``PRAGMA``, no ``RETURNING``, no ``INSERT OR ...``/``REPLACE``, no ``rowid``
  and no function only SQLite has (``ifnull``, ``group_concat``, ``julianday``,
  ``strftime``, ``datetime``, ``printf``, ``instr``, ``last_insert_rowid``, ``changes``);
  ``COALESCE``, ``MAX``, ``COUNT``, ``LOWER``, row-value comparisons and
  ``ON CONFLICT (...) DO ...`` work on both;
* passes values of the column's type: ``int(flag)`` for an INTEGER flag (PostgreSQL
  refuses a ``bool`` there), ``bytes`` for a BLOB/bytea, ``str`` for TEXT;
* writes several rows only inside :func:`transaction`, and catches a failed statement
  outside it (on PostgreSQL an error ends the transaction); a duplicate key is
  ``db.IntegrityError`` on both.

``tests/test_store_portable.py`` checks the first two rules; the contract suite runs
against both databases for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..records import COMPLETE


class Rows(Protocol):
    """A statement's result, as sqlite3's cursor offers it."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Database(Protocol):
    """What every query needs of a connection: SQLite's (:func:`.connect`) or PostgreSQL's."""

    IntegrityError: type[Exception]

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Rows: ...

    def transaction(self) -> AbstractContextManager[Any]: ...


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


def transaction(conn: Database) -> AbstractContextManager[Any]:
    """A write transaction that takes its lock at once (no upgrade deadlocks).

    Each store says how: SQLite begins IMMEDIATE once its process's other writers are done
    (:mod:`.connection`); PostgreSQL holds one connection from BEGIN to COMMIT, and the
    first UPDATE of a row locks that row until then (:mod:`.postgres`).
    """
    return conn.transaction()


# --- users -----------------------------------------------------------------

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


# --- conversations and messages ---------------------------------------------

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


def retention_policies(db: Database) -> list[tuple[str, int]]:
    """Every user who keeps conversations for a number of days: (user id, days)."""
    return [(row[0], int(row[1])) for row in db.execute(
        "SELECT id, retention_days FROM users WHERE retention_days IS NOT NULL").fetchall()]


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
