"""Any OpenAI-compatible Chat Completions server, bounded on every path and every read."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from .. import protocol
from ..errors import ConfigError
from . import wire
from .base import (
    BackendBadResponse,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Turn,
)
from .deadline import Deadline
from .deadline import session as deadline_session

log = logging.getLogger(__name__)


# Backend statuses that mean "busy or down" and "too slow" rather than "broken".
_UNAVAILABLE_STATUSES = frozenset({429, 502, 503})
_TIMEOUT_STATUSES = frozenset({408, 504})


class OpenAIResponder:
    """Any OpenAI-compatible Chat Completions server: OpenAI, Ollama, llama.cpp, vLLM.

    The API key travels only in the ``Authorization: Bearer`` header, only to the
    configured URL (no redirect is followed, no proxy or ``.netrc`` is taken from the
    environment); it is never logged, never part of an error message and masked in
    ``repr``. Connection failures before the request was sent are retried with
    exponential backoff; a timeout after sending, a dropped connection or an HTTP error
    is not (the backend may already be generating). Every call has one wall-clock
    deadline (``max_reply_seconds``) and one size bound (``max_reply_chars`` of text,
    :attr:`max_body_bytes` of body) on every path and every read; a reply cut by either
    raises a :class:`BackendError` whose ``partial`` holds the text kept.
    ``sleep`` is injectable so tests need not wait or patch the clock.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 system_prompt: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, max_attempts: int = 3, backoff: float = 0.5,
                 max_reply_seconds: float = 300.0, max_reply_chars: int = 32768,
                 proxy: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        _check_base_url(base_url, api_key, proxy)
        if not model:
            raise ConfigError("OPENAI_MODEL is empty: name the model the server should run")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key or None
        self.system_prompt = system_prompt or None
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        # A reply that never ends would hold a server thread (and the user's stream) forever.
        self.max_reply_seconds = max_reply_seconds
        self.max_reply_chars = max_reply_chars
        # Room for the JSON around the text: escapes (up to 12 bytes a character) in one
        # completion, or one small event per token in a stream.
        self.max_body_bytes = 64 * max_reply_chars + _BODY_SLACK
        self.proxy = proxy or None
        self._sleep = sleep

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OpenAIResponder:
        """Build from the app's ``OPENAI_*`` and ``SYSTEM_PROMPT`` settings."""
        return cls(
            str(config["OPENAI_BASE_URL"]), str(config["OPENAI_MODEL"] or ""),
            config.get("OPENAI_API_KEY") or None,
            system_prompt=config.get("SYSTEM_PROMPT") or None,
            connect_timeout=float(config["OPENAI_CONNECT_TIMEOUT"]),
            read_timeout=float(config["OPENAI_READ_TIMEOUT"]),
            max_attempts=int(config["OPENAI_MAX_ATTEMPTS"]),
            backoff=float(config["OPENAI_RETRY_BACKOFF"]),
            max_reply_seconds=float(config["OPENAI_MAX_REPLY_SECONDS"]),
            max_reply_chars=int(config["OPENAI_MAX_REPLY_CHARS"]),
            proxy=config.get("OPENAI_PROXY") or None,
        )

    def reply(self, history: Sequence[Turn]) -> str:
        """Ask for the whole reply at once."""
        kept: list[str] = []
        with _logged(), Deadline(self.max_reply_seconds) as deadline, \
                self._post(history, False, deadline) as response:
            text = wire.completion_text(self._read_json(response, deadline))
            try:
                kept.extend(self._bounded([text]))
            except BackendError as e:
                e.partial = "".join(kept)
                raise
        return "".join(kept)

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the reply's text as the backend generates it.

        Closing the generator early closes the connection, which tells the backend to
        stop generating.
        """
        with _logged(), Deadline(self.max_reply_seconds) as deadline, \
                self._post(history, True, deadline) as response:
            if not response.headers.get("Content-Type", "").startswith(protocol.CONTENT_TYPE):
                # A server that ignores "stream": true answers one JSON completion: the
                # same bounds apply to it as to a stream.
                text = wire.completion_text(self._read_json(response, deadline))
                yield from self._bounded([text])
                return
            body = wire.bounded_body(response, deadline, self.max_body_bytes)
            yield from self._bounded(wire.stream_text(body, deadline))

    def _bounded(self, chunks: Iterable[str]) -> Iterator[str]:
        """Pass text on until the character bound or invalid text; keep what came before."""
        length = 0
        for chunk in chunks:
            clean = wire.valid_prefix(chunk)
            room = self.max_reply_chars - length
            kept = clean[:room]
            if kept:
                yield kept
            length += len(kept)
            if len(clean) > room:
                raise BackendBadResponse(f"The AI backend's reply passed "
                                         f"{self.max_reply_chars} characters; it was cut.")
            if clean != chunk:
                raise BackendBadResponse("The AI backend sent text that is not valid Unicode; "
                                         "the reply was cut there.")

    def _payload(self, history: Sequence[Turn], stream: bool) -> dict[str, Any]:
        messages = [{"role": t["role"], "content": t["content"]} for t in history]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return {"model": self.model, "messages": messages, "stream": stream}

    def _post(self, history: Sequence[Turn], stream: bool,
              deadline: Deadline) -> requests.Response:
        """POST the completion request; return a 2xx response or raise a BackendError."""
        headers = {"Accept": protocol.CONTENT_TYPE if stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        payload = self._payload(history, stream)
        for attempt in range(1, self.max_attempts + 1):
            left = deadline.remaining()
            if left <= 0:
                raise BackendTimeout("The AI backend took too long; the reply was cut.")
            try:
                # A fresh session per call: requests.Session is not documented thread-safe.
                with deadline.connecting(), deadline_session(self.proxy) as http:
                    response = http.post(
                        self.url, json=payload, headers=headers, stream=True,
                        allow_redirects=False,
                        timeout=(min(self.connect_timeout, left), min(self.read_timeout, left)))
                break
            except requests.RequestException as e:
                if deadline.expired:
                    raise BackendTimeout("The AI backend took too long; the reply was cut.",
                                         type(e).__name__) from None
                if not wire.never_sent(e) or attempt == self.max_attempts:
                    raise wire.backend_error(e) from None
                delay = min(self.backoff * 2 ** (attempt - 1), deadline.remaining())
                log.info("AI backend unreachable (attempt %d of %d); retrying in %.2f s",
                         attempt, self.max_attempts, delay)
                self._sleep(delay)
        if response.status_code >= 300:
            with response:
                raise self._http_error(response, deadline)
        return response

    def _read_json(self, response: requests.Response, deadline: Deadline) -> Any:
        raw = b"".join(wire.bounded_body(response, deadline, self.max_body_bytes))
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise BackendBadResponse("The AI backend answered something that is not JSON.",
                                     "not JSON") from None

    def _http_error(self, response: requests.Response, deadline: Deadline) -> BackendError:
        status = response.status_code
        if status < 400:
            # Following it would send the prompts (and the key) to an address nobody chose.
            return BackendBadResponse(f"The AI backend answered with a redirect (HTTP {status})"
                                      "; set OPENAI_BASE_URL to the final address.",
                                      f"HTTP {status} redirect, not followed")
        # Only the error's type slug is logged: a backend's message may quote the prompt
        # (plaintext in a log file would break the promise at rest) or echo the key.
        detail = f"HTTP {status} ({self._redact(wire.error_kind(response, deadline))})"
        if status in (401, 403):
            return BackendBadResponse(f"The AI backend refused the request (HTTP {status}): "
                                      "check the API key.", detail)
        if status in _UNAVAILABLE_STATUSES:
            return BackendUnavailable(f"The AI backend is busy or unavailable (HTTP {status}).",
                                      detail)
        if status in _TIMEOUT_STATUSES:
            return BackendTimeout(f"The AI backend timed out (HTTP {status}).", detail)
        return BackendBadResponse(f"The AI backend answered with an error (HTTP {status}).",
                                  detail)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"<OpenAIResponder {self.url} model={self.model!r} api_key={key}>"


# Headers, the JSON around a completion, an error body: bytes a reply of no text may need.
_BODY_SLACK = 1024 * 1024


@contextlib.contextmanager
def _logged() -> Iterator[None]:
    """Log each backend failure once, for the operator, before it reaches the user."""
    try:
        yield
    except BackendError as e:
        log.warning("AI backend failure, %s: %s", e.code, e.detail or e.message)
        raise


def _check_base_url(base_url: str, api_key: str | None, proxy: str | None = None) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OPENAI_BASE_URL must be an http(s) URL, not {base_url!r}")
    hop = urlsplit(proxy) if proxy else None
    if hop is not None and (hop.scheme not in ("http", "https") or not hop.hostname):
        raise ConfigError("OPENAI_PROXY must be an http(s) URL")
    if api_key and parts.scheme == "http":
        # The bearer key is readable on every leg of a plain-http request: the proxy's
        # (when one is configured) and the backend's. Both must stay on this machine.
        legs = [parts.hostname] + ([hop.hostname] if hop is not None and hop.hostname else [])
        if not all(_is_loopback(host) for host in legs):
            raise ConfigError("refusing to send OPENAI_API_KEY over plain http beyond this "
                              "machine; use https (or a backend, and proxy, on 127.0.0.1)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
