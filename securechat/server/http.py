"""The JSON error contract and request-body parsing shared by every ``/api`` route."""

from __future__ import annotations

import io
import logging
from typing import Any, BinaryIO, NoReturn

from flask import Flask, Request, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .. import protocol
from ..errors import DecryptionError

log = logging.getLogger(__name__)

_MESSAGES = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    429: "Too many requests; slow down.",
    500: "Internal server error.",
}


class Abort(HTTPException):
    """Ends a request with the contract's JSON error: a status, its code, a message, headers."""

    description: str  # always the message given (HTTPException allows None)

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description=message)
        self.code = status
        self.slug = code
        self.extra_headers = dict(headers or {})

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        """The response headers, ``Retry-After`` and the like included."""
        return [*super().get_headers(*args, **kwargs), *self.extra_headers.items()]


def fail(status: int, code: str, message: str,
         headers: dict[str, str] | None = None) -> NoReturn:
    """Abort the request with the contract's JSON error (and any extra headers)."""
    raise Abort(status, code, message, headers)


# Set in the environ of an import the production server turned away unread (every
# large-body slot taken): the view answers 503 + Retry-After.
IMPORT_BUSY = "securechat.import_busy"
IMPORT_BUSY_MESSAGE = "Another import is running; try again in a moment."


def busy(message: str, retry_after: int) -> NoReturn:
    """Answer 503 with ``Retry-After``: the server is at capacity, try again shortly."""
    fail(503, "unavailable", message, {"Retry-After": str(max(1, int(retry_after)))})


class SegmentConverter(BaseConverter):
    """A path segment (an id) without NUL: PostgreSQL text cannot hold one (a 500 before)."""

    regex = "[^/\\x00]+"


def no_nul(*texts: str) -> bool:
    """Whether none of ``texts`` holds a NUL (a cursor's strings reach the database)."""
    return not any("\x00" in text for text in texts)


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory (bodies are capped), never on disk.

    werkzeug spools a multipart file over 500 KiB to a temporary file; no route reads
    one, but nothing anyone sent may reach the disk in the clear if one ever does.
    """

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> BinaryIO:
        return io.BytesIO()


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that nesting too deep to parse is invalid JSON, not a crash.

    ``json.loads`` raises ``RecursionError`` on a few thousand nested brackets; every
    ``request.get_json`` of the app goes through here, so each body route answers 400.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON; too deep a nesting raises ``ValueError`` like any malformed text."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def error_response(status: int, code: str, message: str) -> Response:
    """Build ``{"error": {"code", "message"}}`` with the given status."""
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    return response


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or fail with 415/400 (413 when too large)."""
    if request.mimetype != "application/json":
        fail(415, "unsupported_media_type", "Send a JSON body with Content-Type: application/json.")
    _refuse_cut_body()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        fail(400, "invalid_json", "The body must be a JSON object.")
    return data


def optional_json_body() -> dict[str, Any]:
    """For routes that need no body: accept none, or a JSON object (415/400 otherwise)."""
    if not request.content_length and not request.get_data(cache=True):
        return {}
    return json_body()


def _refuse_cut_body() -> None:
    # A chunked body has no Content-Length to check up front, and the server's stream
    # stops at the limit without an error: a body that fills the limit was cut.
    limit = request.max_content_length
    if request.content_length is None and limit is not None:
        if len(request.get_data(cache=True)) >= limit:
            fail(413, "too_large", _MESSAGES[413])


def string_field(data: dict[str, Any], name: str) -> str:
    """Return ``data[name]`` as a string, or fail with 400 when it is missing or not one."""
    value = data.get(name)
    if not isinstance(value, str):
        fail(400, "invalid_field", f"'{name}' must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows lone surrogates ("\ud800"); they cannot be stored, so refuse them here.
        fail(400, "invalid_field", f"'{name}' must be valid Unicode text.")
    return value


def optional_string(data: dict[str, Any], name: str) -> str | None:
    """Return ``data[name]`` as a string or None when absent/null; 400 for another type."""
    return None if data.get(name) is None else string_field(data, name)


def register_error_handlers(app: Flask) -> None:
    """Answer every error under /api as JSON, never an HTML page or a traceback."""

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Any:
        if not request.path.startswith("/api"):
            return e
        status = e.code or 500
        code = getattr(e, "slug", None) or protocol.CODE_OF.get(status, "error")
        message = e.description if isinstance(e, Abort) else _MESSAGES.get(
            status, e.description or "Error.")
        response = error_response(status, code, message)
        for name, value in e.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(DecryptionError)
    def _undecryptable(e: DecryptionError) -> Any:
        # A stored record failed its integrity check: tampered or moved. Say no more.
        log.warning("a stored record failed to decrypt on %s %s", request.method, request.path)
        return error_response(500, "integrity_error", "A stored record failed its integrity check.")

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Any:
        # The traceback goes to the server log only; the body says nothing about it.
        log.error("unhandled %s on %s %s", type(e).__name__, request.method, request.path,
                  exc_info=e)
        if request.path.startswith("/api"):
            return error_response(500, "internal_error", _MESSAGES[500])
        return "Internal server error.", 500, {"Content-Type": "text/plain; charset=utf-8"}
