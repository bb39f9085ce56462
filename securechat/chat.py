"""Conversations and messages: every read scoped to the session's user, every record sealed."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from . import capacity, crypto, scrub, sse, store
from .api import (
    ApiException,
    fail,
    json_body,
    optional_json_body,
    optional_string,
    string_field,
)
from .auth import iso, login_required
from .responders import BackendError, Responder, Turn, trim_history

bp = Blueprint("chat", __name__, url_prefix="/api/conversations")
log = logging.getLogger(__name__)

DEFAULT_TITLE = "New conversation"
MAX_TITLE = 200
DEFAULT_PAGE, MAX_PAGE = 50, 200
PAGE_MAX_CHARS = 256 * 1024  # a page may hold fewer than `limit` messages, never more text


def responder() -> Responder:
    """The app's configured AI backend."""
    return current_app.extensions["securechat.responder"]


def _title_ad(conv_id: str) -> bytes:
    return crypto.record_ad("title", user=g.user_id, conversation=conv_id)


def _message_ad(conv_id: str, position: int, role: str, status: str = store.COMPLETE) -> bytes:
    # An incomplete reply is bound to that status: flipping the flag breaks the record.
    # Complete ones keep the v1 associated data, so older rows still open.
    extra = {"status": status} if status != store.COMPLETE else {}
    return crypto.record_ad("message", user=g.user_id, conversation=conv_id,
                            position=position, role=role, **extra)


def _conversation_json(conv: store.Conversation) -> dict[str, Any]:
    title = crypto.open_(g.data_key, conv.title, _title_ad(conv.id)).decode("utf-8")
    return {"id": conv.id, "title": title, "created_at": conv.created_at}


def _message_json(conv_id: str, msg: store.Message) -> dict[str, Any]:
    content = crypto.open_(g.data_key, msg.content,
                           _message_ad(conv_id, msg.position, msg.role, msg.status))
    return _shown(msg.id, msg.role, content.decode("utf-8"), msg.created_at, msg.status)


def _shown(msg_id: str, role: str, content: str, created: str, status: str) -> dict[str, Any]:
    """A message as the API shows it; ``incomplete`` appears only on a reply cut short."""
    shown = {"id": msg_id, "role": role, "content": content, "created_at": created}
    if status == store.INCOMPLETE:
        shown["incomplete"] = True
    return shown


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
    scrub.now(store.get_db())  # its ciphertext leaves the -wal file too
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
    # A huge 'before' means "from the newest"; unclamped it overflows SQLite's integers (500).
    return limit, None if before is None else min(before, 2**62)


@bp.get("/<conv_id>/messages")
@login_required
def history(conv_id: str) -> Response:
    """One page of history, oldest to newest; ``next_before`` fetches the older page."""
    _own_conversation(conv_id)
    limit, before = _page_args()
    # Newest first until the page holds PAGE_MAX_CHARS: a page (and the memory one slow
    # reader can pin) stays a few MB even when every message is at its length limit.
    page: list[dict[str, Any]] = []
    chars, oldest = 0, 0
    for row in store.newest_messages(store.get_db(), conv_id, limit, before):
        message = _message_json(conv_id, row)
        chars += len(message["content"])
        if page and chars > PAGE_MAX_CHARS:
            break
        page.append(message)
        oldest = row.position
    page.reverse()
    return jsonify(messages=page, next_before=str(oldest) if oldest > 0 else None)


def _append(conv_id: str, role: str, content: str,
            status: str = store.COMPLETE) -> dict[str, Any]:
    return _store(conv_id, role, content, status)[0]


def _store(conv_id: str, role: str, content: str,
           status: str = store.COMPLETE) -> tuple[dict[str, Any], int]:
    """Seal and append a message; return it as shown and its position."""
    msg_id, created = uuid.uuid4().hex, iso()

    def seal(position: int) -> bytes:
        return crypto.seal(g.data_key, content.encode("utf-8"),
                           _message_ad(conv_id, position, role, status))

    position = store.append_message(store.get_db(), g.user_id, conv_id, msg_id, role,
                                     seal, created, status)
    if position is None:
        fail(404, "not_found", "No such conversation.")
    return _shown(msg_id, role, content, created, status), position


def _recent_history(conv_id: str, through: int | None = None) -> list[Turn]:
    """What the backend is shown: the newest complete messages within both bounds.

    ``through`` ends the history at that position: a message sent at the same moment
    from another tab must not become the one this request's reply answers.
    """
    cfg = current_app.config
    window = int(cfg["HISTORY_WINDOW"])
    needed = getattr(responder(), "max_history", None)
    if isinstance(needed, int) and needed > 0:
        window = min(window, needed)
    before = None if through is None else through + 1
    rows = store.page_messages(store.get_db(), conv_id, window, before)
    # A reply cut short is kept for the user but not fed back to the model as if it were whole.
    turns = [Turn(role=m["role"], content=m["content"])
             for m in (_message_json(conv_id, r) for r in rows) if "incomplete" not in m]
    return trim_history(turns, window, int(cfg["HISTORY_MAX_CHARS"]))


def _wants_stream() -> bool:
    """True when the client asked for Server-Sent Events rather than JSON."""
    return request.accept_mimetypes.best_match(
        ["application/json", sse.CONTENT_TYPE]) == sse.CONTENT_TYPE


def _answer(conv_id: str, history: list[Turn], call: capacity.BackendCall,
            **shown: Any) -> Response | tuple[Response, int]:
    """Ask the backend (streamed or not), holding ``call``'s slots until the answer is done."""
    if _wants_stream():
        return _stream_reply(conv_id, history, call)  # freed when the response closes
    try:
        return jsonify(**shown, reply=_ask(conv_id, history)), 201
    finally:
        call.release()


def _ask(conv_id: str, history: list[Turn]) -> dict[str, Any]:
    """Ask the backend for the whole reply and store it; backend failures become 502/503/504."""
    try:
        text = responder().reply(history)
    except BackendError as e:
        # A reply cut by a bound is kept, marked incomplete, as a stream's would be.
        _keep_partial(conv_id, [e.partial])
        fail(e.status, e.code, e.message)
    return _append(conv_id, "assistant", text)


def _stream_reply(conv_id: str, history: list[Turn], call: capacity.BackendCall) -> Response:
    """Answer Server-Sent Events: ``delta`` per chunk, then ``done`` (or ``error``).

    The backend slot ``call`` is held until the response is closed, however it ends.
    """

    def events() -> Iterator[bytes]:
        parts: list[str] = []
        final: bytes | None = None  # the closing event, once the reply is settled
        chunks = responder().stream(history)
        try:
            # A comment (ignored by SSE readers) sends the headers now: the client learns
            # that its message is stored while the backend is still thinking.
            yield b": stream open\n\n"
            try:
                for chunk in chunks:
                    parts.append(chunk)
                    yield sse.encode("delta", {"content": chunk})
            except BackendError as e:
                final = _error_event(e.code, e.message)
                _keep_partial(conv_id, parts)
            else:
                final = _store_reply_event(conv_id, "".join(parts))
        except Exception as e:  # the headers are sent: report, do not vanish
            # A bug or a database failure mid-stream: the client still gets the contract's
            # error event, and the server log gets the traceback.
            log.error("unhandled %s while streaming a reply", type(e).__name__, exc_info=e)
            final = _error_event("internal_error", "Internal server error.")
            _keep_partial(conv_id, parts)
        finally:
            # Closing the backend's stream stops its generation when the client left.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            if final is None:
                # GeneratorExit: the client went away mid-stream; keep what was generated.
                _keep_partial(conv_id, parts)
        yield final

    response = Response(stream_with_context(events()), mimetype=sse.CONTENT_TYPE)
    # Proxies such as nginx would otherwise buffer the stream into one late block.
    response.headers["X-Accel-Buffering"] = "no"
    # The WSGI server closes the response even when the client left before the first byte.
    response.call_on_close(call.release)
    return response


def _error_event(code: str, message: str) -> bytes:
    return sse.encode("error", {"error": {"code": code, "message": message}})


def _store_reply_event(conv_id: str, text: str) -> bytes:
    """Store the finished reply; the ``done`` event, or ``error`` if the conversation went."""
    try:
        return sse.encode("done", _append(conv_id, "assistant", text))
    except ApiException as e:
        # Deleted while the reply was streaming: the headers are long sent, so say it here.
        return _error_event(e.slug, str(e.description))


def _keep_partial(conv_id: str, parts: list[str]) -> None:
    """Store a reply cut short, marked incomplete (nothing when nothing was generated)."""
    text = "".join(parts)
    if not text:
        return
    try:
        _append(conv_id, "assistant", text, store.INCOMPLETE)
    except ApiException:
        pass  # the conversation was deleted meanwhile: there is nowhere to keep it
    except Exception as e:  # runs while an error event is being sent
        log.error("could not keep a partial reply: %s", type(e).__name__, exc_info=e)


@bp.post("/<conv_id>/messages")
@login_required
def send(conv_id: str) -> Response | tuple[Response, int]:
    """Store the user's message, ask the backend, store and return its reply.

    With ``Accept: text/event-stream`` the reply is streamed as Server-Sent Events.
    """
    content = string_field(json_body(), "content")
    limit = int(current_app.config["MAX_MESSAGE_CHARS"])
    if not content.strip() or len(content) > limit:
        fail(400, "invalid_content", f"A message is 1-{limit} characters and not blank.")
    _own_conversation(conv_id)
    call = capacity.BackendCall(g.user_id)  # 429 before anything is stored
    try:
        # Stored before the backend is asked: a backend failure never loses it.
        message, position = _store(conv_id, "user", content)
        call.start()
        history = _recent_history(conv_id, through=position)
    except BaseException:
        call.release()
        raise
    return _answer(conv_id, history, call, message=message)


@bp.post("/<conv_id>/reply")
@login_required
def reply_again(conv_id: str) -> Response | tuple[Response, int]:
    """Ask the backend again for the last user message left without a complete reply.

    The way to retry after a 502/503/504 or a cut-off stream; no body is needed. Streams
    like sending does with ``Accept: text/event-stream``.
    """
    optional_json_body()
    _own_conversation(conv_id)
    last = store.page_messages(store.get_db(), conv_id, 1)
    if not last or (last[0].role == "assistant" and last[0].status == store.COMPLETE):
        fail(409, "nothing_to_answer", "The last message already has a reply.")
    call = capacity.BackendCall(g.user_id)
    try:
        call.start()
        history = _recent_history(conv_id)
    except BaseException:
        call.release()
        raise
    return _answer(conv_id, history, call)
