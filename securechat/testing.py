"""A fake OpenAI-compatible backend on 127.0.0.1, for tests and offline notebooks.

It is no model: it answers from a script, streams at a chosen pace and can be told to
misbehave, so every failure path of :class:`securechat.responders.OpenAIResponder`
can be shown and tested without a network or a GPU::

    with FakeOpenAI(chunk_delay=0.01) as fake:
        app = create_app({"RESPONDER": "openai", "OPENAI_BASE_URL": fake.base_url})
        fake.fail_next("error")   # the next request answers HTTP 500
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from flask import Flask, Response, jsonify, request

from .background import BackgroundServer
from .errors import SecureChatError

Messages = list[dict[str, Any]]

# What each failure mode does to one request.
MODES = {
    "error": "answer HTTP 500; its message quotes the Authorization header and the prompt, "
             "as careless servers do (tests prove neither reaches a user or a log)",
    "garbage": "answer 200 with a body that is not a completion",
    "stall": "say nothing until released or `stall_seconds` pass",
    "drop": "close the connection without answering",
    "cut": "send the first half of the reply, then close the connection",
    "no_stream": "answer one JSON completion even when a stream was asked for",
    "keepalive": "open a stream, then send only SSE comments until released or "
                 "`stall_seconds` pass",
    "empty_deltas": "open a stream, then send deltas without text until released or "
                    "`stall_seconds` pass",
    "surrogate": "put a lone surrogate (\\ud800, valid JSON, invalid text) mid-reply",
    "nested": "answer 200 with JSON nested too deeply to parse",
    "redirect": "answer 307 pointing at /v1/redirected (which records any request)",
}


def default_reply(messages: Messages) -> str:
    """The fake's answer: it names how many messages it was sent and quotes the last."""
    last = messages[-1]["content"] if messages else ""
    return f"I am a fake model. I was sent {len(messages)} messages; the last says: {last}"


def chunks_of(text: str) -> list[str]:
    """Split a reply into word-sized pieces, the way models stream tokens."""
    return re.findall(r"\s*\S+\s*", text) or [text]


class FakeOpenAI:
    """A scripted Chat Completions server: ``POST /v1/chat/completions``, streamed or not.

    ``requests`` records what each request carried (the ``Authorization`` header and the
    JSON body): exactly what a real backend would see. ``cancelled`` counts streams the
    client closed before the end. With ``api_key`` set, other bearer keys get HTTP 401.
    ``gate``, when given, is called with each streamed piece's index before it is sent
    and may block: a test paces the stream by what its client has received.
    """

    def __init__(self, reply: Callable[[Messages], str] = default_reply, *,
                 chunk_delay: float = 0.0, api_key: str | None = None,
                 stall_seconds: float = 10.0, port: int = 0,
                 gate: Callable[[int], None] | None = None) -> None:
        self.reply = reply
        self.chunk_delay = chunk_delay
        self.gate = gate
        self.api_key = api_key
        self.stall_seconds = stall_seconds
        self.requests: list[dict[str, Any]] = []
        self.redirected: list[dict[str, Any]] = []  # requests that followed a redirect
        self.cancelled = 0
        self._lock = threading.Lock()
        self._port = port
        self._failures: deque[str] = deque()
        self._released = threading.Event()
        self._server: BackgroundServer | None = None
        self.app = self._build_app()

    # --- control ----------------------------------------------------------------------

    def fail_next(self, *modes: str) -> None:
        """Make the next requests misbehave, one mode each, in order (see ``MODES``)."""
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown failure modes {unknown}; known: {sorted(MODES)}")
        self._failures.extend(modes)

    def release(self) -> None:
        """End every stall now (and all later ones)."""
        self._released.set()

    @property
    def port(self) -> int:
        """The bound port (a free one chosen by the OS unless given)."""
        if self._server is None:
            raise SecureChatError("fake backend is not running")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be set to."""
        return self.url + "/v1"

    def start(self) -> FakeOpenAI:
        """Bind 127.0.0.1 (a free port unless one was given) and serve from a thread."""
        if self._server is not None:
            raise SecureChatError("fake backend already started")
        self._released.clear()
        # HTTP/1.1, so streams use chunked encoding like Ollama, vLLM and OpenAI do.
        self._server = BackgroundServer(self.app, port=self._port, keep_alive=True,
                                        name="securechat-fake-openai").start()
        return self

    def stop(self) -> None:
        """Release stalls, stop serving and join every thread. Safe to call twice."""
        if self._server is None:
            return
        self._released.set()
        self._server.stop()
        self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start() if self._server is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<FakeOpenAI {state}, {len(self.requests)} requests>"

    # --- the HTTP side ----------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("securechat.testing")

        @app.post("/v1/chat/completions")
        def completions() -> Any:
            body = request.get_json(silent=True)
            self.requests.append({"authorization": request.headers.get("Authorization"),
                                  "body": body})
            mode = self._next_mode()
            if mode == "error":
                return _error(500, "server_error", f"boom: {request.headers.get('Authorization')}"
                              f" while answering {_last_content(body)!r}")
            if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "invalid_api_key", "Incorrect API key provided.")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "invalid_request_error", "'messages' is required.")
            if mode == "stall":
                self._stall()
            if mode == "drop":
                _drop(request.environ["werkzeug.socket"])
                return Response(b"")
            if mode == "nested":
                return Response(b"[" * 100_000 + b"]" * 100_000, mimetype="application/json")
            if mode == "redirect":
                return Response(b"", status=307, headers={"Location": "/v1/redirected"})
            if mode in ("keepalive", "empty_deltas"):
                return Response(self._idle_stream(str(body.get("model", "fake")), mode),
                                mimetype="text/event-stream")
            if mode == "garbage":
                if body.get("stream"):
                    return Response(b"data: {not json\n\n", mimetype="text/event-stream")
                return Response(b"<html>502 Bad Gateway</html>", mimetype="text/html")
            text = self.reply(body["messages"])
            if mode == "surrogate":
                half = len(text) // 2
                text = text[:half] + "\ud800" + text[half:]
            model = str(body.get("model", "fake"))
            if body.get("stream") and mode != "no_stream":
                # The generator runs after the view returned: hand it the socket now.
                cut = request.environ["werkzeug.socket"] if mode == "cut" else None
                return Response(self._stream(text, model, cut), mimetype="text/event-stream")
            if mode == "cut":
                return Response(self._cut_json(text, model, request.environ["werkzeug.socket"]),
                                mimetype="application/json")
            return jsonify(_completion(text, model))

        @app.route("/v1/redirected", methods=["GET", "POST"])
        def redirected() -> Any:
            self.redirected.append({"authorization": request.headers.get("Authorization"),
                                    "body": request.get_json(silent=True)})
            return jsonify(_completion("followed a redirect", "fake"))

        return app

    def _next_mode(self) -> str | None:
        try:
            return self._failures.popleft()
        except IndexError:
            return None

    def _stall(self) -> None:
        self._released.wait(self.stall_seconds)

    def _stream(self, text: str, model: str, cut: socket.socket | None) -> Iterator[bytes]:
        """Stream ``text``; with ``cut``, shut that socket after half of it."""
        pieces = chunks_of(text)
        if cut is not None:
            pieces = pieces[: max(1, len(pieces) // 2)]
        finished = False
        try:
            yield _event(_chunk(model, {"role": "assistant", "content": ""}))
            for index, piece in enumerate(pieces):
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
                if self.gate is not None:
                    self.gate(index)
                yield _event(_chunk(model, {"content": piece}))
            if cut is not None:
                _drop(cut)
                finished = True
                return
            yield _event(_chunk(model, {}, finish="stop"))
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                # GeneratorExit: the client closed the stream; a real server stops here too.
                with self._lock:
                    self.cancelled += 1


    def _idle_stream(self, model: str, mode: str) -> Iterator[bytes]:
        """A stream that never says anything: comments, or deltas with no text."""
        yield _event(_chunk(model, {"role": "assistant", "content": ""}))
        deadline = time.monotonic() + self.stall_seconds
        while not self._released.wait(0.05) and time.monotonic() < deadline:
            yield b": keep-alive\n\n" if mode == "keepalive" else _event(_chunk(model, {}))

    @staticmethod
    def _cut_json(text: str, model: str, sock: socket.socket) -> Iterator[bytes]:
        body = json.dumps(_completion(text, model)).encode("utf-8")
        yield body[: len(body) // 2]
        _drop(sock)


def _last_content(body: Any) -> str:
    try:
        return str(body["messages"][-1]["content"])
    except (TypeError, KeyError, IndexError):
        return ""


def _drop(sock: socket.socket) -> None:
    # Shut the request's socket: the client sees the connection end, with no answer.
    sock.shutdown(socket.SHUT_RDWR)


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"message": message, "type": "fake_error", "code": code}), status


def _completion(text: str, model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


def _chunk(model: str, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _event(data: dict[str, Any]) -> bytes:
    # ensure_ascii: a lone surrogate travels as the JSON escape "\ud800", as it would.
    return b"data: " + json.dumps(data).encode("utf-8") + b"\n\n"
