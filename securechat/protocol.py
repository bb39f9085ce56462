"""What the client and the server share: the CSRF header, error codes, Server-Sent Events.

The server encodes events with :func:`encode`; the client (and the OpenAI backend, whose
streams are SSE too) decodes them with :func:`parse` over :func:`iter_body`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

CSRF_HEADER = "X-CSRF-Token"
# Account rules (the page states them next to its form).
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
CONTENT_TYPE = "text/event-stream"

def client_key(address: str | None) -> str:
    """Who a client address counts as for limits: itself, or its IPv6 /64.

    One IPv6 subscriber usually holds a whole /64: counted address by address, it would
    have billions of login budgets and connection slots. IPv4-mapped IPv6 is its IPv4.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# The status of each error code the server answers. A stream reports an error as an event
# (its status is long sent): clients map the code back to the status the JSON route would
# have answered.
STATUS_OF = {
    "bad_request": 400, "invalid_json": 400, "invalid_field": 400, "invalid_query": 400,
    "invalid_content": 400, "invalid_title": 400, "invalid_username": 400,
    "invalid_password": 400, "invalid_export": 400, "invalid_archive": 400,
    "unauthorized": 401, "session_expired": 401,
    "invalid_credentials": 401, "forbidden": 403, "csrf_failed": 403, "not_found": 404,
    "method_not_allowed": 405, "conflict": 409, "username_taken": 409,
    "nothing_to_answer": 409, "too_large": 413, "unsupported_media_type": 415,
    "rate_limited": 429, "internal_error": 500, "integrity_error": 500,
    "bad_gateway": 502, "backend_error": 502, "backend_bad_response": 502,
    "unavailable": 503, "backend_unavailable": 503, "timeout": 504, "backend_timeout": 504,
}
# The code of each status werkzeug raises on its own (404, 405, 413, ...).
CODE_OF = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
           405: "method_not_allowed", 409: "conflict", 413: "too_large",
           415: "unsupported_media_type", 429: "rate_limited", 500: "internal_error",
           502: "bad_gateway", 503: "unavailable", 504: "timeout"}
# A line longer than this is not an event but a broken (or hostile) peer.
MAX_LINE = 1024 * 1024


class Event(NamedTuple):
    """One decoded event: its name (``message`` when unnamed) and its data text."""

    event: str
    data: str


def encode(event: str, data: Any) -> bytes:
    """Return one event with a JSON ``data:`` line (JSON never holds a raw newline)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def parse(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[Event]:
    """Decode a byte stream into events, following the WHATWG rules for the fields used here.

    Lines end with LF or CRLF (a lone CR, which no OpenAI-compatible server sends, is not
    a line end here). Comments and unknown fields are skipped. Raises ``ValueError`` for a
    line longer than ``max_line`` bytes.
    """
    buffer = b""
    name = ""  # the event being read: its name and its data lines
    data: list[str] = []
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > max_line or any(len(line) > max_line for line in lines):
            raise ValueError("event stream line too long")
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield Event(name or "message", "\n".join(data))
                name, data = "", []
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    # An event not closed by a blank line when the stream ends is discarded (per the spec).


def iter_body(response: requests.Response, size: int = 65536) -> Iterator[bytes]:
    """Yield a streamed response's body as soon as bytes arrive, chunked or not.

    ``iter_content`` waits for a full ``size`` block on a body without chunked encoding
    (HTTP/1.0, as served by the background server); ``read1`` returns what is there.
    Errors are raised as ``requests`` exceptions, like the rest of a request's.
    """
    raw = response.raw
    try:
        while data := raw.read1(size):
            yield data
    except ReadTimeoutError as e:
        raise requests.ReadTimeout(e, response=response) from e
    except (Urllib3Error, OSError) as e:
        raise requests.ConnectionError(e, response=response) from e
