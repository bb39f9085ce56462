"""The signed-in user's records: titles and messages sealed on the way in, opened on the way out.

Every function works on the request's user (``g.user_id``, ``g.data_key``), so a record
of another user can neither be read nor written through here.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import g

from .. import crypto, records, store
from .http import Abort, fail
from .sessions import iso

MAX_DEFAULT_TITLE = 60


def seal_title(conv_id: str, title: str) -> bytes:
    """A conversation title, sealed for the user."""
    return crypto.seal(g.data_key, title.encode("utf-8"), records.title_ad(g.user_id, conv_id))


def conversation_json(conv: store.Conversation) -> dict[str, Any]:
    """A conversation as the API shows it (its title opened)."""
    title = crypto.open_(g.data_key, conv.title, records.title_ad(g.user_id, conv.id))
    return {"id": conv.id, "title": title.decode("utf-8"), "created_at": conv.created_at,
            "updated_at": conv.updated_at, "starred": conv.starred}


def message_json(conv_id: str, msg: store.Message) -> dict[str, Any]:
    """A stored message as the API shows it (its content opened)."""
    ad = records.message_ad(g.user_id, conv_id, msg.position, msg.role, msg.status)
    content = crypto.open_(g.data_key, msg.content, ad).decode("utf-8")
    return shown(msg.id, msg.role, content, msg.created_at, msg.status)


def shown(msg_id: str, role: str, content: str, created: str, status: str) -> dict[str, Any]:
    """A message as the API shows it; ``incomplete`` appears only on a reply cut short."""
    message: dict[str, Any] = {"id": msg_id, "role": role, "content": content,
                               "created_at": created}
    if status == records.INCOMPLETE:
        message["incomplete"] = True
    return message


def own_conversation(conv_id: str) -> store.Conversation:
    """The user's conversation, or 404 (the same for "not yours" and "no such one")."""
    conv = store.get_conversation(store.get_db(), g.user_id, conv_id)
    if conv is None:
        fail(404, "not_found", "No such conversation.")
    return conv


def default_title(content: str) -> str:
    """What an untitled conversation is called: its first message's first line, short."""
    line = next((ln for ln in content.splitlines() if ln.strip()), content)
    words = " ".join(line.split())
    return words if len(words) <= MAX_DEFAULT_TITLE else words[:MAX_DEFAULT_TITLE - 1] + "…"


def append(conv_id: str, role: str, content: str, status: str = records.COMPLETE,
           replace: store.Replace | None = None) -> tuple[dict[str, Any], int]:
    """Seal and append a message; return it as shown and its position (404 if gone).

    ``replace``: put it there instead, deleting what followed (409 if a message came
    since). A user's first message names a conversation no one has titled.
    """
    msg_id, created = uuid.uuid4().hex, iso()

    def seal(position: int) -> bytes:
        ad = records.message_ad(g.user_id, conv_id, position, role, status)
        return crypto.seal(g.data_key, content.encode("utf-8"), ad)

    def title() -> bytes:
        return seal_title(conv_id, default_title(content))

    try:
        position = store.append_message(store.get_db(), g.user_id, conv_id, msg_id, role,
                                        seal, created, status, replace,
                                        title if role == "user" else None)
    except store.Conflict:
        fail(409, "conflict", "The conversation changed meanwhile (another tab?); "
             "reload it and try again.")
    if position is None:
        fail(404, "not_found", "No such conversation.")
    return shown(msg_id, role, content, created, status), position


def keep_partial(conv_id: str, text: str, replace: store.Replace | None = None) -> None:
    """Store a reply cut short, marked incomplete (nothing when nothing was generated)."""
    if not text:
        return
    try:
        append(conv_id, "assistant", text, records.INCOMPLETE, replace)
    except Abort:
        pass  # deleted or changed meanwhile: there is nowhere to keep it
