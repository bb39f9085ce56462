"""What every ChatClient method stands on: one HTTP session, its errors, streamed replies."""

from __future__ import annotations

import contextlib
import json as jsonlib
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from . import protocol
from .errors import ApiError, TransportError
from .protocol import CSRF_HEADER


class ClientBase:
    """The plumbing under :class:`securechat.ChatClient`: the session, its CSRF token, errors."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.csrf_token: str | None = None
        self.username: str | None = None

    # --- plumbing -----------------------------------------------------------------

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        """Send one API request; return the decoded JSON (None for 204)."""
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        return _decoded(self._http(method, path, json=json, params=params, headers=headers))

    def _http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP exchange with a timeout; transport failures become TransportError."""
        try:
            return self.http.request(method, self.base_url + path, timeout=self.timeout,
                                     **kwargs)
        except requests.Timeout as e:
            raise TransportError("timeout", f"No answer from {self.base_url} in time.") from e
        except requests.ConnectionError as e:
            raise TransportError("unreachable", f"Cannot reach {self.base_url}; is the "
                           "server running?") from e
        except requests.RequestException as e:
            # A malformed URL, a broken chunked answer, ...: still the package's error.
            raise TransportError("request_failed", f"The request to {self.base_url} failed: "
                           f"{type(e).__name__}.") from e

    def _stream(self, path: str, body: Any) -> ReplyStream:
        """POST ``body`` and return the reply's event stream; errors before it raise here."""
        headers = {"Accept": protocol.CONTENT_TYPE}
        if self.csrf_token:
            headers[CSRF_HEADER] = self.csrf_token
        response = self._http("POST", path, json=body, headers=headers, stream=True)
        if not response.headers.get("Content-Type", "").startswith(protocol.CONTENT_TYPE):
            with response:
                _decoded(response)  # raises the server's ApiError
                raise TransportError("bad_response",
                                     "The server did not answer with an event stream.")
        return ReplyStream(response)


class ReplyStream:
    """A reply arriving as Server-Sent Events; iterate it for the text chunks.

    After the last chunk, ``message`` is the stored reply (``{"id", "role", "content",
    "created_at"}``) and ``text`` the whole reply. A backend failure mid-reply raises
    :class:`ApiError` with the server's code (502/503/504 as ``status``); ``text`` then
    holds what arrived, which the server stored marked ``incomplete``. Iterating to the
    end, ``close()`` or a ``with`` block releases the connection.
    """

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self.message: dict[str, Any] | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for event in protocol.parse(protocol.iter_body(self._response)):
                data = jsonlib.loads(event.data)
                if event.event == "delta":
                    self.text += data["content"]
                    yield data["content"]
                elif event.event == "done":
                    self.message = data
                    return
                elif event.event == "error":
                    error = data["error"]
                    # An error event carries the code; the status goes with it.
                    raise ApiError(protocol.STATUS_OF.get(error["code"], 502),
                                   error["code"], error["message"])
        except requests.Timeout as e:
            raise TransportError("timeout", "The server stopped sending the reply.") from e
        except requests.RequestException as e:  # connection reset, broken chunking, ...
            raise TransportError("stream_broken", "The connection broke mid-reply.") from e
        except (ValueError, KeyError, TypeError) as e:
            raise TransportError("bad_response", "The server sent an unreadable event.") from e
        finally:
            self.close()
        raise TransportError("stream_broken", "The event stream ended before the reply did.")

    def close(self) -> None:
        """Release the connection (the server keeps what was generated, marked incomplete)."""
        self._response.close()

    def abort(self) -> None:
        """Stop the reply from another thread: iterating it ends at once, with an error.

        Closing would wait for the read it interrupts (the reader holds the buffer's lock
        while it waits for the backend); shutting the socket down makes that read return.
        """
        try:
            fd = self._response.raw.fileno()
        except (OSError, ValueError):  # already closed: nothing left to stop
            return
        # A duplicate of the descriptor: shutting it down ends the connection both share.
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as dup, \
                contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "done" if self.message is not None else f"{len(self.text)} chars so far"
        return f"<ReplyStream {state}>"


def _decoded(response: requests.Response) -> Any:
    """The JSON of a response (None for 204), or the server's error as ApiError."""
    if response.status_code == 204:
        return None
    try:
        data = response.json()
    except (ValueError, RecursionError) as e:
        if response.ok:
            raise TransportError("bad_response", "The server did not answer JSON.") from e
        # An error page from something in between (a proxy's HTML 502): keep its status.
        raise ApiError(response.status_code, "bad_response",
                       "The server did not answer JSON.") from e
    if not response.ok:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        # Flask-Limiter sends Retry-After on every limited route; it means "wait" only here.
        wait = (retry_after(response.headers.get("Retry-After"))
                if response.status_code in (429, 503) else None)
        raise ApiError(response.status_code, str(error.get("code", "error")),
                       str(error.get("message", response.reason)), retry_after=wait)
    return data


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); None if unusable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _quote(segment: str) -> str:
    return quote(segment, safe="")
