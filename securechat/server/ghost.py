"""Ghost chats: the client keeps the history, the server relays it and stores nothing.

No row, no security event, no log line with the content or its length: the conversation
exists only in the client and, for the time of the request, in this process's memory.
The backend's budget and caps are the same as for a stored chat.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g

from ..backends import Turn, trim_history
from . import stream
from .capacity import BackendCall
from .http import fail, json_body
from .sessions import login_required

bp = Blueprint("ghost", __name__, url_prefix="/api/ghost")

ROLES = ("user", "assistant")


@bp.post("")
@login_required
def ghost() -> Response | tuple[Response, int]:
    """Answer the history sent, JSON or Server-Sent Events, storing nothing of it."""
    history = _history(json_body())
    call = BackendCall(g.user_id)  # the same per-user and server-wide caps as a send
    try:
        call.start()
    except BaseException:
        call.release()
        raise
    return stream.answer_unstored(history, call)


def _history(data: dict[str, Any]) -> list[Turn]:
    """The ``messages`` of a ghost request as turns, or 400 saying what is wrong."""
    cfg = current_app.config
    window, longest = int(cfg["HISTORY_WINDOW"]), int(cfg["MAX_MESSAGE_CHARS"])
    unknown = sorted(set(data) - {"messages"})
    if unknown:
        fail(400, "invalid_field", f"Unknown field '{unknown[0]}': send 'messages' only.")
    items = data.get("messages")
    if not isinstance(items, list) or not 1 <= len(items) <= window:
        fail(400, "invalid_field", f"'messages' is a list of 1-{window} messages.")
    turns = []
    for i, item in enumerate(items):
        where = f"messages[{i}]"
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            fail(400, "invalid_field", f"{where} is an object with 'role' and 'content' only.")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            fail(400, "invalid_field", f"{where}.role is 'user' or 'assistant'.")
        if not isinstance(content, str) or not content.strip() or len(content) > longest:
            fail(400, "invalid_field", f"{where}.content is 1-{longest} characters of text.")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            fail(400, "invalid_field", f"{where}.content must be valid Unicode text.")
        turns.append(Turn(role=role, content=content))
    if turns[-1]["role"] != "user":
        fail(400, "invalid_field", "The last message is the user's: that is what is answered.")
    return trim_history(turns, window, int(cfg["HISTORY_MAX_CHARS"]))
