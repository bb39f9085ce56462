"""Answering from the AI backend: the whole reply as JSON, or streamed as Server-Sent Events.

The user's message is stored before the backend is asked; a backend failure answers
502/503/504 (or an ``error`` event) and keeps what was generated, marked incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, jsonify, request, stream_with_context

from .. import protocol, store
from ..backends import BackendError, Responder, Turn, trim_history
from . import messages
from .capacity import BackendCall
from .coalesce import coalesced
from .http import Abort, fail

log = logging.getLogger(__name__)


def responder() -> Responder:
    """The app's configured AI backend."""
    return current_app.extensions["securechat.responder"]


def recent_history(conv_id: str, through: int | None = None) -> list[Turn]:
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
             for m in (messages.message_json(conv_id, r) for r in rows)
             if "incomplete" not in m]
    return trim_history(turns, window, int(cfg["HISTORY_MAX_CHARS"]))


def wants_stream() -> bool:
    """True when the client asked for Server-Sent Events rather than JSON."""
    return request.accept_mimetypes.best_match(
        ["application/json", protocol.CONTENT_TYPE]) == protocol.CONTENT_TYPE


def answer(conv_id: str, history: list[Turn], call: BackendCall,
           replace: store.Replace | None = None, **shown: Any) -> Response | tuple[Response, int]:
    """Ask the backend (streamed or not), holding ``call``'s slots until the answer is done.

    The reply is stored at the end of the conversation, or in place of what ``replace``
    names (a regenerated reply).
    """
    if wants_stream():
        # Freed when the response closes.
        return _stream_reply(history, call,
                             lambda text: _store_reply_event(conv_id, text, replace),
                             lambda parts: _keep_partial(conv_id, parts, replace))
    try:
        return jsonify(**shown, reply=_ask(conv_id, history, replace)), 201
    finally:
        call.release()


def answer_unstored(history: list[Turn], call: BackendCall) -> Response | tuple[Response, int]:
    """Ask the backend for a reply that is never stored (a ghost chat), JSON or SSE.

    Nothing of it is written anywhere: no row, no security event, and no log line holding
    its content or its length.
    """
    if wants_stream():
        return _stream_reply(history, call, _unstored_done, lambda parts: None)
    try:
        try:
            text = responder().reply(history)
        except BackendError as e:
            if not e.partial:
                fail(e.status, e.code, e.message)
            # Cut by a bound: nowhere to keep it but in the answer, marked.
            return jsonify(reply=_unstored(e.partial, incomplete=True)), 200
        return jsonify(reply=_unstored(text)), 200
    finally:
        call.release()


def _unstored(text: str, incomplete: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": text}
    if incomplete:
        reply["incomplete"] = True
    return reply


def _unstored_done(text: str) -> bytes:
    return protocol.encode("done", _unstored(text))


def _ask(conv_id: str, history: list[Turn], replace: store.Replace | None) -> dict[str, Any]:
    """Ask the backend for the whole reply and store it; backend failures become 502/503/504."""
    try:
        text = responder().reply(history)
    except BackendError as e:
        # A reply cut by a bound is kept, marked incomplete, as a stream's would be.
        messages.keep_partial(conv_id, e.partial, replace)
        fail(e.status, e.code, e.message)
    return messages.append(conv_id, "assistant", text, replace=replace)[0]


def _stream_reply(history: list[Turn], call: BackendCall, finish: Callable[[str], bytes],
                  keep: Callable[[list[str]], None]) -> Response:
    """Answer Server-Sent Events: ``delta`` per chunk, then ``done`` (or ``error``).

    Chunks that arrive within ``STREAM_COALESCE_WINDOW`` of each other share one
    ``delta`` (the first is never held). ``finish`` settles the whole reply into the
    closing event (storing it, or not); ``keep`` keeps what a reply cut short had
    generated. The backend slot ``call`` is held until the response is closed, however it
    ends.
    """
    window = float(current_app.config["STREAM_COALESCE_WINDOW"])

    def events() -> Iterator[bytes]:
        parts: list[str] = []
        final: bytes | None = None  # the closing event, once the reply is settled
        chunks = coalesced(responder().stream(history), window)
        try:
            # A comment (ignored by SSE readers) sends the headers now: the client learns
            # that its message is stored while the backend is still thinking.
            yield b": stream open\n\n"
            try:
                for chunk in chunks:
                    parts.append(chunk)
                    yield protocol.encode("delta", {"content": chunk})
            except BackendError as e:
                final = _error_event(e.code, e.message)
                keep(parts)
            else:
                final = finish("".join(parts))
        except Exception as e:  # the headers are sent: report, do not vanish
            # A bug or a database failure mid-stream: the client still gets the contract's
            # error event, and the server log gets the traceback.
            log.error("unhandled %s while streaming a reply", type(e).__name__, exc_info=e)
            final = _error_event("internal_error", "Internal server error.")
            keep(parts)
        finally:
            # Closing the backend's stream stops its generation when the client left.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            if final is None:
                # GeneratorExit: the client went away mid-stream (or pressed Stop): keep
                # what was generated.
                keep(parts)
        yield final

    response = Response(stream_with_context(events()), mimetype=protocol.CONTENT_TYPE)
    # Proxies such as nginx would otherwise buffer the stream into one late block.
    response.headers["X-Accel-Buffering"] = "no"
    # The WSGI server closes the response even when the client left before the first byte.
    response.call_on_close(call.release)
    return response


def _error_event(code: str, message: str) -> bytes:
    return protocol.encode("error", {"error": {"code": code, "message": message}})


def _store_reply_event(conv_id: str, text: str, replace: store.Replace | None) -> bytes:
    """Store the finished reply; the ``done`` event, or ``error`` if the conversation went."""
    try:
        return protocol.encode("done", messages.append(conv_id, "assistant", text,
                                                       replace=replace)[0])
    except Abort as e:
        # Deleted (or changed) while the reply was streaming: the headers are long sent,
        # so say it here.
        return _error_event(e.slug, str(e.description))


def _keep_partial(conv_id: str, parts: list[str], replace: store.Replace | None) -> None:
    try:
        messages.keep_partial(conv_id, "".join(parts), replace)
    except Exception as e:  # runs while an error event is being sent: log, carry on
        log.error("could not keep a partial reply: %s", type(e).__name__, exc_info=e)
