"""Conversations and messages: every read scoped to the session's user, every record sealed."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import records, store
from . import messages, stream
from .capacity import BackendCall
from .http import fail, json_body, no_nul, optional_json_body, optional_string, string_field
from .sessions import iso, login_required

bp = Blueprint("chat", __name__, url_prefix="/api/conversations")

DEFAULT_TITLE = "New conversation"
MAX_TITLE = 200
DEFAULT_PAGE, MAX_PAGE = 50, 200
PAGE_MAX_CHARS = 256 * 1024  # a page may hold fewer than `limit` messages, never more text
# How far back a reply or an edit looks for the last user message: replies come one at a
# time, so a conversation's tail holds it unless something odd happened.
TAIL = 20


@bp.post("")
@login_required
def create() -> tuple[Response, int]:
    """Create a conversation with an optional title (a default one otherwise)."""
    chosen = (optional_string(json_body(), "title") or "").strip()
    if len(chosen) > MAX_TITLE:
        fail(400, "invalid_title", f"Titles are at most {MAX_TITLE} characters.")
    # Untitled, it is named after its first message once there is one.
    title = chosen or DEFAULT_TITLE
    conv_id, created = uuid.uuid4().hex, iso()
    store.create_conversation(store.get_db(), conv_id, g.user_id,
                              messages.seal_title(conv_id, title), created, titled=bool(chosen))
    return jsonify(id=conv_id, title=title, created_at=created, updated_at=created,
                   starred=False), 201


@bp.patch("/<conv_id>")
@login_required
def update(conv_id: str) -> Response:
    """Rename and/or star a conversation; its ``updated_at`` (last message) stays."""
    data = json_body()
    unknown = sorted(set(data) - {"title", "starred"})
    if unknown:
        fail(400, "invalid_field", f"Unknown field '{unknown[0]}': send 'title' and/or "
             "'starred'.")
    if not data:
        fail(400, "invalid_field", "Send 'title' and/or 'starred'.")
    title = None
    if "title" in data:
        title = string_field(data, "title").strip()
        if not title or len(title) > MAX_TITLE:
            fail(400, "invalid_title", f"A title is 1-{MAX_TITLE} characters and not blank.")
    starred = data.get("starred")
    if "starred" in data and not isinstance(starred, bool):
        fail(400, "invalid_field", "'starred' must be true or false.")
    sealed = None if title is None else messages.seal_title(conv_id, title)
    if not store.update_conversation(store.get_db(), g.user_id, conv_id, sealed, starred):
        fail(404, "not_found", "No such conversation.")
    return jsonify(messages.conversation_json(messages.own_conversation(conv_id)))


@bp.get("")
@login_required
def list_all() -> Response:
    """One page of the user's conversations: starred first, then by last activity.

    ``next_before`` is an opaque cursor for the next page (null on the last one).
    """
    limit = _limit()
    after = _list_cursor(request.args.get("before"))
    convs = store.list_conversations(store.get_db(), g.user_id, limit + 1, after)
    more, convs = len(convs) > limit, convs[:limit]
    last = convs[-1] if convs and more else None
    cursor = None if last is None else _encode_cursor(
        [int(last.starred), last.updated_at, last.id])
    return jsonify(conversations=[messages.conversation_json(c) for c in convs],
                   next_before=cursor)


def _encode_cursor(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _list_cursor(text: str | None) -> store.ListCursor | None:
    """The position a list cursor names, or 400 for anything this server did not make."""
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        starred, updated, conv_id = json.loads(raw)
        if starred in (0, 1) and isinstance(updated, str) and isinstance(conv_id, str) \
                and no_nul(updated, conv_id):
            return int(starred), updated, conv_id
    except (ValueError, TypeError, RecursionError):
        pass
    fail(400, "invalid_query", "'before' is not a cursor this server gave out.")


@bp.delete("/<conv_id>")
@login_required
def delete(conv_id: str) -> Response:
    """Delete a conversation and all its messages."""
    if not store.delete_conversation(store.get_db(), g.user_id, conv_id):
        fail(404, "not_found", "No such conversation.")
    store.scrub.now(store.get_db())  # its ciphertext leaves the -wal file too
    return Response(status=204)


def _content(data: dict[str, Any]) -> str:
    """The message ``content`` of a request body, or 400 when blank or too long."""
    content = string_field(data, "content")
    limit = int(current_app.config["MAX_MESSAGE_CHARS"])
    if not content.strip() or len(content) > limit:
        fail(400, "invalid_content", f"A message is 1-{limit} characters and not blank.")
    return content


def _limit() -> int:
    try:
        limit = int(request.args.get("limit", DEFAULT_PAGE))
    except ValueError:
        fail(400, "invalid_query", "'limit' must be an integer.")
    if not 1 <= limit <= MAX_PAGE:
        fail(400, "invalid_query", f"'limit' is 1-{MAX_PAGE}.")
    return limit


def _page_args() -> tuple[int, int | None]:
    limit = _limit()
    try:
        before_arg = request.args.get("before")
        before = None if before_arg in (None, "") else int(before_arg)
    except ValueError:
        fail(400, "invalid_query", "'before' must be a cursor this server gave out.")
    if before is not None and before < 0:
        fail(400, "invalid_query", "'before' must be a cursor this server gave out.")
    # A huge 'before' means "from the newest"; unclamped it overflows SQLite's integers (500).
    return limit, None if before is None else min(before, 2**62)


@bp.get("/<conv_id>/messages")
@login_required
def history(conv_id: str) -> Response:
    """One page of history, oldest to newest; ``next_before`` fetches the older page."""
    messages.own_conversation(conv_id)
    limit, before = _page_args()
    # Newest first until the page holds PAGE_MAX_CHARS: a page (and the memory one slow
    # reader can pin) stays a few MB even when every message is at its length limit.
    page: list[dict[str, Any]] = []
    chars, oldest = 0, 0
    for row in store.newest_messages(store.get_db(), conv_id, limit, before):
        message = messages.message_json(conv_id, row)
        chars += len(message["content"])
        if page and chars > PAGE_MAX_CHARS:
            break
        page.append(message)
        oldest = row.position
    page.reverse()
    return jsonify(messages=page, next_before=str(oldest) if oldest > 0 else None)


@bp.post("/<conv_id>/messages")
@login_required
def send(conv_id: str) -> Response | tuple[Response, int]:
    """Store the user's message, ask the backend, store and return its reply.

    With ``Accept: text/event-stream`` the reply is streamed as Server-Sent Events.
    """
    content = _content(json_body())
    messages.own_conversation(conv_id)
    call = BackendCall(g.user_id)  # 429 before anything is stored
    try:
        # Stored before the backend is asked: a backend failure never loses it.
        message, position = messages.append(conv_id, "user", content)
        call.start()
        history = stream.recent_history(conv_id, through=position)
    except BaseException:
        call.release()
        raise
    return stream.answer(conv_id, history, call, message=message)


@bp.post("/<conv_id>/reply")
@login_required
def reply_again(conv_id: str) -> Response | tuple[Response, int]:
    """Answer the last user message again: after a failure, or ``regenerate`` a reply.

    ``{}`` (or no body) answers a last user message left without a complete reply: the
    way to retry after a 502/503/504 or a cut-off stream. ``{"regenerate": true}``
    replaces the last reply with a new one; the old one stays if the backend gives
    nothing. Streams like sending does with ``Accept: text/event-stream``.
    """
    data = optional_json_body()
    unknown = sorted(set(data) - {"regenerate"})
    if unknown:
        fail(400, "invalid_field", f"Unknown field '{unknown[0]}'.")
    regenerate = data.get("regenerate", False)
    if not isinstance(regenerate, bool):
        fail(400, "invalid_field", "'regenerate' must be true or false.")
    messages.own_conversation(conv_id)
    db = store.get_db()
    tail = store.page_messages(db, conv_id, TAIL)
    replies = list(itertools.takewhile(lambda m: m.role == "assistant", reversed(tail)))
    if len(replies) == len(tail) or (replies and not regenerate
                                      and replies[0].status == records.COMPLETE):
        # No user message (in reach) to answer, or it has its reply and none was asked for.
        fail(409, "nothing_to_answer", "The last message already has a reply."
             if tail else "There is no message to answer.")
    # Regenerating replaces the replies after the user message; otherwise a reply cut
    # short stays where it is and the new one follows it. Only if the conversation still
    # ends where it did when read: a message sent meanwhile is never deleted (409).
    replace = (store.Replace(replies[-1].position, tail[-1].position + 1)
               if regenerate and replies else None)
    call = BackendCall(g.user_id)
    try:
        call.start()
        through = tail[len(tail) - len(replies) - 1].position
        history = stream.recent_history(conv_id, through=through)
    except BaseException:
        call.release()
        raise
    return stream.answer(conv_id, history, call, replace)


@bp.put("/<conv_id>/messages/<msg_id>")
@login_required
def edit(conv_id: str, msg_id: str) -> Response | tuple[Response, int]:
    """Edit the last user message and ask again: what followed it is deleted.

    Only the last user message can be edited (409 for an earlier one); the edited
    message takes its place (a new id, positions reused) and is stored before the
    backend is asked, as a sent one is.
    """
    content = _content(json_body())
    messages.own_conversation(conv_id)
    db = store.get_db()
    tail = store.page_messages(db, conv_id, TAIL)
    last_user = next((m for m in reversed(tail) if m.role == "user"), None)
    if last_user is None or last_user.id != msg_id:
        if store.find_message(db, conv_id, msg_id) is None:
            fail(404, "not_found", "No such message.")
        fail(409, "not_last_user_message", "Only your last message can be edited.")
    call = BackendCall(g.user_id)  # 429 before anything is stored
    try:
        replace = store.Replace(last_user.position, tail[-1].position + 1)
        message, position = messages.append(conv_id, "user", content, replace=replace)
        call.start()
        history = stream.recent_history(conv_id, through=position)
    except BaseException:
        call.release()
        raise
    return stream.answer(conv_id, history, call, message=message)
