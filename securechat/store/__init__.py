"""Storage: SQLite or PostgreSQL, the schema's migrations and every query; ciphertext only."""

from __future__ import annotations

from . import accounts, events, portable, postgres, scrub
from .connection import Pool, connect, get_db, init_app
from .migrate import SCHEMA_VERSION, migrate
from .queries import (
    Conflict,
    Conversation,
    Database,
    ListCursor,
    Message,
    Replace,
    Session,
    User,
    UsernameTaken,
    append_message,
    create_conversation,
    create_session,
    create_user,
    delete_conversation,
    delete_idle_conversations,
    delete_session,
    delete_stale_sessions,
    find_message,
    find_user,
    get_conversation,
    get_session,
    get_user,
    keep_recent_sessions,
    list_conversations,
    newest_messages,
    page_messages,
    retention_policies,
    rewrap_user_key,
    touch_session,
    transaction,
    update_conversation,
)

__all__ = [
    "Conflict", "Conversation", "Database", "ListCursor", "Message", "Pool", "Replace",
    "SCHEMA_VERSION", "Session", "User", "UsernameTaken", "accounts", "append_message",
    "connect", "create_conversation", "create_session", "create_user", "delete_conversation",
    "delete_idle_conversations", "delete_session", "delete_stale_sessions", "events",
    "find_user", "get_conversation", "get_db", "get_session", "get_user", "init_app",
    "keep_recent_sessions", "list_conversations", "migrate", "newest_messages", "find_message",
    "page_messages", "portable", "postgres", "retention_policies", "rewrap_user_key", "scrub",
    "touch_session", "transaction", "update_conversation",
]
