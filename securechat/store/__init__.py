"""Storage: SQLite or PostgreSQL, the schema's migrations and every query; ciphertext only."""

from __future__ import annotations

from . import accounts, conversations, database, events, portable, postgres, scrub, users
from .connection import Pool, connect, get_db, init_app
from .conversations import (
    Conflict,
    Conversation,
    ListCursor,
    Message,
    Replace,
    append_message,
    create_conversation,
    delete_conversation,
    delete_idle_conversations,
    find_message,
    get_conversation,
    list_conversations,
    newest_messages,
    page_messages,
    update_conversation,
)
from .database import Database, transaction
from .migrate import SCHEMA_VERSION, migrate
from .users import (
    Session,
    User,
    UsernameTaken,
    create_session,
    create_user,
    delete_session,
    delete_stale_sessions,
    find_user,
    get_session,
    get_user,
    keep_recent_sessions,
    retention_policies,
    rewrap_user_key,
    touch_session,
)

__all__ = [
    "Conflict", "Conversation", "Database", "ListCursor", "Message", "Pool", "Replace",
    "SCHEMA_VERSION", "Session", "User", "UsernameTaken", "accounts", "append_message",
    "connect", "conversations", "create_conversation", "create_session", "create_user",
    "database", "delete_conversation", "delete_idle_conversations", "delete_session",
    "delete_stale_sessions", "events", "find_message", "find_user", "get_conversation",
    "get_db", "get_session", "get_user", "init_app", "keep_recent_sessions",
    "list_conversations", "migrate", "newest_messages", "page_messages", "portable", "postgres",
    "retention_policies", "rewrap_user_key", "scrub", "touch_session", "transaction",
    "update_conversation", "users",
]
