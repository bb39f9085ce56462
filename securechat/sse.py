"""Server-Sent Events: encode them for the streaming API, decode them from an HTTP response."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

CONTENT_TYPE = "text/event-stream"
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
    name, data = "", []
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
