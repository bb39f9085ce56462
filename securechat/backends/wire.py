"""The Chat Completions wire format, read within the bounds: completions, streams, errors.

Every read of a backend body goes through :func:`bounded_body` (the deadline and a byte
cap); every failure becomes a :class:`BackendError` whose message names no URL, header,
key, prompt or reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

from .. import protocol
from .base import BackendBadResponse, BackendError, BackendTimeout, BackendUnavailable
from .deadline import Deadline

ERROR_BODY_BYTES = 64 * 1024


def never_sent(e: requests.RequestException) -> bool:
    """True when the connection failed before the request left, so a retry is safe."""
    if isinstance(e, requests.ConnectTimeout):
        return True
    reason = e.args[0] if e.args else None
    # urllib3 wraps failures to connect (refused, DNS, connect timeout) in MaxRetryError;
    # a failure after sending comes as ProtocolError or ReadTimeoutError instead.
    return (isinstance(e, requests.ConnectionError) and isinstance(reason, MaxRetryError)
            and isinstance(reason.reason, ConnectTimeoutError))


def backend_error(e: requests.RequestException) -> BackendError:
    """Translate a transport failure; the message names no URL, header or key."""
    detail = type(e).__name__
    if never_sent(e):
        return BackendUnavailable("The AI backend cannot be reached; is it running?", detail)
    # Reading a body, requests reports a read timeout as a ConnectionError wrapping it.
    if isinstance(e, requests.Timeout) or isinstance(e.args[0] if e.args else None,
                                                     ReadTimeoutError):
        return BackendTimeout("The AI backend did not answer in time.", detail)
    return BackendBadResponse("The AI backend closed the connection without a complete reply.",
                              detail)


def bounded_body(response: requests.Response, deadline: Deadline,
                  max_bytes: int) -> Iterator[bytes]:
    """The body as it arrives, within the deadline and ``max_bytes``; BackendError else."""
    total = 0
    try:
        for data in protocol.iter_body(response):
            total += len(data)
            if total > max_bytes:
                raise BackendBadResponse("The AI backend's answer is too large; it was cut.",
                                         f"body over {max_bytes} bytes")
            yield data
    except requests.RequestException as e:
        if deadline.expired:
            raise BackendTimeout("The AI backend took too long; the reply was cut.",
                                 type(e).__name__) from None
        raise backend_error(e) from None
    if deadline.expired:
        # The deadline shut the connection: what looks like its end is not the reply's.
        raise BackendTimeout("The AI backend took too long; the reply was cut.")


def error_kind(response: requests.Response, deadline: Deadline) -> str:
    """The ``error.code`` or ``error.type`` slug of an OpenAI-style error body, if any."""
    try:
        error = json.loads(b"".join(bounded_body(response, deadline,
                                                  ERROR_BODY_BYTES))).get("error")
        kind = error.get("code") or error.get("type")
    except (BackendError, ValueError, RecursionError, AttributeError):
        return "no error type"
    return re.sub(r"[^A-Za-z0-9_.-]", "", str(kind))[:60] or "no error type"


def valid_prefix(text: str) -> str:
    """``text`` up to its first lone surrogate (which no UTF-8 text can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return text[: e.start]
    return text


def completion_text(body: Any) -> str:
    """The reply text of a non-streamed completion."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise BackendBadResponse("The AI backend's answer holds no reply text.")
    return content


def stream_text(body: Iterable[bytes], deadline: Deadline) -> Iterator[str]:
    """The text deltas of a streamed completion; raise unless the stream ends properly."""
    finished = False
    try:
        for event in protocol.parse(body):
            if event.data.strip() == "[DONE]":
                return
            text, done = delta(event.data)
            finished = finished or done
            if text:
                yield text
    except ValueError:
        raise BackendBadResponse("The AI backend sent an unreadable stream.") from None
    if not finished:
        # Without [DONE] or a finish_reason the reply may be cut short: say so.
        raise BackendBadResponse("The AI backend's stream ended before the reply did.")


def delta(data: str) -> tuple[str, bool]:
    """The text of one streamed chunk, and whether it carries a finish reason."""
    try:
        chunk = json.loads(data)
        if "error" in chunk:
            raise BackendBadResponse("The AI backend reported an error mid-reply.")
        choice = chunk["choices"][0] if chunk["choices"] else {}
        text = (choice.get("delta") or {}).get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError):
        raise BackendBadResponse("The AI backend sent a malformed stream chunk.") from None
    if not isinstance(text, str):
        raise BackendBadResponse("The AI backend sent a malformed stream chunk.")
    return text, bool(choice.get("finish_reason"))
