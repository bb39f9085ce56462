"""AI reply backends behind one small interface; the offline echo is the default."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypedDict
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

from . import sse
from .deadline import Deadline
from .deadline import session as deadline_session
from .errors import ConfigError, SecureChatError

log = logging.getLogger(__name__)


class Turn(TypedDict):
    """One message of the history a responder is shown."""

    role: str  # "user" or "assistant"
    content: str


class BackendError(SecureChatError):
    """The AI backend failed; ``status`` is the HTTP answer the API gives for it."""

    status = 502
    code = "backend_error"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        # For the server log: what went wrong technically; never a prompt, a reply or a key.
        self.detail = detail
        # The reply's text before the failure (a reply cut short), kept marked incomplete.
        self.partial = ""


class BackendBadResponse(BackendError):
    """The backend answered with an error or with something that is not a reply."""

    status, code = 502, "backend_bad_response"


class BackendUnavailable(BackendError):
    """The backend cannot be reached."""

    status, code = 503, "backend_unavailable"


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    status, code = 504, "backend_timeout"


class Responder(Protocol):
    """What the chat routes need from a backend.

    An optional ``max_history`` attribute (an int) says how many recent messages the
    backend can use at most; the chat routes then decrypt no more than that.
    """

    def reply(self, history: Sequence[Turn]) -> str:
        """Return the assistant's reply to the last user turn of ``history``."""
        ...

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the reply in chunks as it is generated."""
        ...


class EchoResponder:
    """Offline and deterministic: the reply repeats the user's message verbatim."""

    prefix = "Echo: "
    # Only the last user message is echoed: decrypting more history would be wasted work.
    max_history = 1

    def reply(self, history: Sequence[Turn]) -> str:
        """Return ``Echo: <last user message>``."""
        last = next((t["content"] for t in reversed(history) if t["role"] == "user"), "")
        return self.prefix + last

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the echo word by word (each word with its following whitespace)."""
        text = self.reply(history)
        yield from re.findall(r"\s*\S+\s*", text) or [text]


def trim_history(turns: Sequence[Turn], max_messages: int, max_chars: int) -> list[Turn]:
    """Keep the newest turns within both bounds; the newest one is always kept whole.

    The kept window starts with a user turn, as chat templates of local models expect.
    """
    kept: list[Turn] = []
    total = 0
    for turn in reversed(turns):
        if len(kept) >= max_messages or (kept and total + len(turn["content"]) > max_chars):
            break
        kept.append(turn)
        total += len(turn["content"])
    kept.reverse()
    while len(kept) > 1 and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


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
            text = _completion_text(self._read_json(response, deadline))
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
            if not response.headers.get("Content-Type", "").startswith(sse.CONTENT_TYPE):
                # A server that ignores "stream": true answers one JSON completion: the
                # same bounds apply to it as to a stream.
                yield from self._bounded([_completion_text(self._read_json(response, deadline))])
                return
            body = _bounded_body(response, deadline, self.max_body_bytes)
            yield from self._bounded(_stream_text(body, deadline))

    def _bounded(self, chunks: Iterable[str]) -> Iterator[str]:
        """Pass text on until the character bound or invalid text; keep what came before."""
        length = 0
        for chunk in chunks:
            clean = _valid_prefix(chunk)
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
        headers = {"Accept": sse.CONTENT_TYPE if stream else "application/json"}
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
                if not _never_sent(e) or attempt == self.max_attempts:
                    raise _backend_error(e) from None
                delay = min(self.backoff * 2 ** (attempt - 1), deadline.remaining())
                log.info("AI backend unreachable (attempt %d of %d); retrying in %.2f s",
                         attempt, self.max_attempts, delay)
                self._sleep(delay)
        if response.status_code >= 300:
            with response:
                raise self._http_error(response, deadline)
        return response

    def _read_json(self, response: requests.Response, deadline: Deadline) -> Any:
        raw = b"".join(_bounded_body(response, deadline, self.max_body_bytes))
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
        detail = f"HTTP {status} ({self._redact(_error_kind(response, deadline))})"
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
_ERROR_BODY_BYTES = 64 * 1024


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


def _never_sent(e: requests.RequestException) -> bool:
    """True when the connection failed before the request left, so a retry is safe."""
    if isinstance(e, requests.ConnectTimeout):
        return True
    reason = e.args[0] if e.args else None
    # urllib3 wraps failures to connect (refused, DNS, connect timeout) in MaxRetryError;
    # a failure after sending comes as ProtocolError or ReadTimeoutError instead.
    return (isinstance(e, requests.ConnectionError) and isinstance(reason, MaxRetryError)
            and isinstance(reason.reason, ConnectTimeoutError))


def _backend_error(e: requests.RequestException) -> BackendError:
    """Translate a transport failure; the message names no URL, header or key."""
    detail = type(e).__name__
    if _never_sent(e):
        return BackendUnavailable("The AI backend cannot be reached; is it running?", detail)
    # Reading a body, requests reports a read timeout as a ConnectionError wrapping it.
    if isinstance(e, requests.Timeout) or isinstance(e.args[0] if e.args else None,
                                                     ReadTimeoutError):
        return BackendTimeout("The AI backend did not answer in time.", detail)
    return BackendBadResponse("The AI backend closed the connection without a complete reply.",
                              detail)


def _bounded_body(response: requests.Response, deadline: Deadline,
                  max_bytes: int) -> Iterator[bytes]:
    """The body as it arrives, within the deadline and ``max_bytes``; BackendError else."""
    total = 0
    try:
        for data in sse.iter_body(response):
            total += len(data)
            if total > max_bytes:
                raise BackendBadResponse("The AI backend's answer is too large; it was cut.",
                                         f"body over {max_bytes} bytes")
            yield data
    except requests.RequestException as e:
        if deadline.expired:
            raise BackendTimeout("The AI backend took too long; the reply was cut.",
                                 type(e).__name__) from None
        raise _backend_error(e) from None
    if deadline.expired:
        # The deadline shut the connection: what looks like its end is not the reply's.
        raise BackendTimeout("The AI backend took too long; the reply was cut.")


def _error_kind(response: requests.Response, deadline: Deadline) -> str:
    """The ``error.code`` or ``error.type`` slug of an OpenAI-style error body, if any."""
    try:
        error = json.loads(b"".join(_bounded_body(response, deadline,
                                                  _ERROR_BODY_BYTES))).get("error")
        kind = error.get("code") or error.get("type")
    except (BackendError, ValueError, RecursionError, AttributeError):
        return "no error type"
    return re.sub(r"[^A-Za-z0-9_.-]", "", str(kind))[:60] or "no error type"


def _valid_prefix(text: str) -> str:
    """``text`` up to its first lone surrogate (which no UTF-8 text can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return text[: e.start]
    return text


def _completion_text(body: Any) -> str:
    """The reply text of a non-streamed completion."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise BackendBadResponse("The AI backend's answer holds no reply text.")
    return content


def _stream_text(body: Iterable[bytes], deadline: Deadline) -> Iterator[str]:
    """The text deltas of a streamed completion; raise unless the stream ends properly."""
    finished = False
    try:
        for event in sse.parse(body):
            if event.data.strip() == "[DONE]":
                return
            text, done = _delta(event.data)
            finished = finished or done
            if text:
                yield text
    except ValueError:
        raise BackendBadResponse("The AI backend sent an unreadable stream.") from None
    if not finished:
        # Without [DONE] or a finish_reason the reply may be cut short: say so.
        raise BackendBadResponse("The AI backend's stream ended before the reply did.")


def _delta(data: str) -> tuple[str, bool]:
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


def make_responder(config: Mapping[str, Any]) -> Responder:
    """Build the responder named by ``RESPONDER`` in the config."""
    name = str(config.get("RESPONDER", "echo")).lower()
    if name == "echo":
        return EchoResponder()
    if name == "openai":
        return OpenAIResponder.from_config(config)
    raise ConfigError(f"unknown RESPONDER {name!r}; available: echo, openai")
