"""Conversations and messages: every read scoped to the session's user, every record sealed."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import crypto, store
from .api import fail, json_body, optional_string, string_field
from .auth import iso, login_required
from .responders import BackendError, Responder, Turn

bp = Blueprint("chat", __name__, url_prefix="/api/conversations")

DEFAULT_TITLE = "New conversation"
MAX_TITLE = 200
DEFAULT_PAGE, MAX_PAGE = 50, 200


def responder() -> Responder:
    """The app's configured AI backend."""
    return current_app.extensions["securechat.responder"]


def _title_ad(conv_id: str) -> bytes:
    return crypto.record_ad("title", user=g.user_id, conversation=conv_id)


def _message_ad(conv_id: str, position: int, role: str) -> bytes:
    return crypto.record_ad("message", user=g.user_id, conversation=conv_id,
                            position=position, role=role)


def _conversation_json(conv: store.Conversation) -> dict[str, Any]:
    title = crypto.open_(g.data_key, conv.title, _title_ad(conv.id)).decode("utf-8")
    return {"id": conv.id, "title": title, "created_at": conv.created_at}


def _message_json(conv_id: str, msg: store.Message) -> dict[str, Any]:
    content = crypto.open_(g.data_key, msg.content, _message_ad(conv_id, msg.position, msg.role))
    return {"id": msg.id, "role": msg.role, "content": content.decode("utf-8"),
            "created_at": msg.created_at}


def _own_conversation(conv_id: str) -> store.Conversation:
    conv = store.get_conversation(store.get_db(), g.user_id, conv_id)
    if conv is None:
        # Same answer for "not yours" and "does not exist": ids leak nothing.
        fail(404, "not_found", "No such conversation.")
    return conv


@bp.post("")
@login_required
def create() -> tuple[Response, int]:
    """Create a conversation with an optional title (a default one otherwise)."""
    title = (optional_string(json_body(), "title") or "").strip() or DEFAULT_TITLE
    if len(title) > MAX_TITLE:
        fail(400, "invalid_title", f"Titles are at most {MAX_TITLE} characters.")
    conv_id, created = uuid.uuid4().hex, iso()
    sealed = crypto.seal(g.data_key, title.encode("utf-8"), _title_ad(conv_id))
    store.create_conversation(store.get_db(), conv_id, g.user_id, sealed, created)
    return jsonify(id=conv_id, title=title, created_at=created), 201


@bp.get("")
@login_required
def list_all() -> Response:
    """List the user's conversations, newest first."""
    convs = store.list_conversations(store.get_db(), g.user_id)
    return jsonify(conversations=[_conversation_json(c) for c in convs])


@bp.delete("/<conv_id>")
@login_required
def delete(conv_id: str) -> Response:
    """Delete a conversation and all its messages."""
    if not store.delete_conversation(store.get_db(), g.user_id, conv_id):
        fail(404, "not_found", "No such conversation.")
    return Response(status=204)


def _page_args() -> tuple[int, int | None]:
    try:
        limit = int(request.args.get("limit", DEFAULT_PAGE))
        before_arg = request.args.get("before")
        before = None if before_arg in (None, "") else int(before_arg)
    except ValueError:
        fail(400, "invalid_query", "'limit' and 'before' must be integers.")
    if not 1 <= limit <= MAX_PAGE or (before is not None and before < 0):
        fail(400, "invalid_query", f"'limit' is 1-{MAX_PAGE}; 'before' is not negative.")
    return limit, before


@bp.get("/<conv_id>/messages")
@login_required
def history(conv_id: str) -> Response:
    """One page of history, oldest to newest; ``next_before`` fetches the older page."""
    _own_conversation(conv_id)
    limit, before = _page_args()
    rows = store.page_messages(store.get_db(), conv_id, limit, before)
    oldest = rows[0].position if rows else 0
    return jsonify(messages=[_message_json(conv_id, m) for m in rows],
                   next_before=str(oldest) if oldest > 0 else None)


def _append(conv_id: str, role: str, content: str) -> dict[str, Any]:
    msg_id, created = uuid.uuid4().hex, iso()

    def seal(position: int) -> bytes:
        return crypto.seal(g.data_key, content.encode("utf-8"),
                           _message_ad(conv_id, position, role))

    position = store.append_message(store.get_db(), g.user_id, conv_id, msg_id, role,
                                     seal, created)
    if position is None:
        fail(404, "not_found", "No such conversation.")
    return {"id": msg_id, "role": role, "content": content, "created_at": created}


def _recent_history(conv_id: str) -> list[Turn]:
    window = int(current_app.config["HISTORY_WINDOW"])
    rows = store.page_messages(store.get_db(), conv_id, window)
    return [Turn(role=m["role"], content=m["content"])
            for m in (_message_json(conv_id, r) for r in rows)]


@bp.post("/<conv_id>/messages")
@login_required
def send(conv_id: str) -> tuple[Response, int]:
    """Store the user's message, ask the backend, store and return its reply."""
    content = string_field(json_body(), "content")
    limit = int(current_app.config["MAX_MESSAGE_CHARS"])
    if not content.strip() or len(content) > limit:
        fail(400, "invalid_content", f"A message is 1-{limit} characters and not blank.")
    _own_conversation(conv_id)
    # Stored before the backend is asked: a backend failure never loses it.
    message = _append(conv_id, "user", content)
    try:
        text = responder().reply(_recent_history(conv_id))
    except BackendError as e:
        fail(e.status, e.code, e.message)
    reply = _append(conv_id, "assistant", text)
    return jsonify(message=message, reply=reply), 201
