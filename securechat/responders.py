"""AI reply backends behind one small interface; the offline echo is the default."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypedDict
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

from . import sse
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

    The API key travels only in the ``Authorization: Bearer`` header; it is never logged,
    never part of an error message and masked in ``repr``. Connection failures before the
    request was sent are retried with exponential backoff; a timeout after sending, a
    dropped connection or an HTTP error is not (the backend may already be generating).
    ``sleep`` is injectable so tests need not wait or patch the clock.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 system_prompt: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, max_attempts: int = 3, backoff: float = 0.5,
                 max_reply_seconds: float = 300.0, max_reply_chars: int = 32768,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        _check_base_url(base_url, api_key)
        if not model:
            raise ConfigError("OPENAI_MODEL is empty: name the model the server should run")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key or None
        self.system_prompt = system_prompt or None
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        # A reply that never ends would hold a server thread (and the user's stream) forever.
        self.max_reply_seconds = max_reply_seconds
        self.max_reply_chars = max_reply_chars
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
        )

    def reply(self, history: Sequence[Turn]) -> str:
        """Ask for the whole reply at once."""
        with _logged(), self._post(history, stream=False) as response:
            text = _completion_text(_read_json(response))
            if len(text) > self.max_reply_chars:
                raise BackendBadResponse(f"The AI backend's reply is longer than "
                                         f"{self.max_reply_chars} characters.")
            return text

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the reply's text as the backend generates it.

        Closing the generator early closes the connection, which tells the backend to
        stop generating.
        """
        deadline = time.monotonic() + self.max_reply_seconds
        with _logged(), self._post(history, stream=True) as response:
            if not response.headers.get("Content-Type", "").startswith(sse.CONTENT_TYPE):
                # A server that ignores "stream": true answers one JSON completion.
                yield _completion_text(_read_json(response))
                return
            length = 0
            for chunk in _stream_text(response):
                length += len(chunk)
                if length > self.max_reply_chars:
                    raise BackendBadResponse(f"The AI backend's reply passed "
                                             f"{self.max_reply_chars} characters; it was cut.")
                yield chunk
                if time.monotonic() > deadline:
                    raise BackendTimeout("The AI backend took too long; the reply was cut.")

    def _payload(self, history: Sequence[Turn], stream: bool) -> dict[str, Any]:
        messages = [{"role": t["role"], "content": t["content"]} for t in history]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return {"model": self.model, "messages": messages, "stream": stream}

    def _post(self, history: Sequence[Turn], stream: bool) -> requests.Response:
        """POST the completion request; return a 2xx response or raise a BackendError."""
        headers = {"Accept": sse.CONTENT_TYPE if stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        payload = self._payload(history, stream)
        for attempt in range(1, self.max_attempts + 1):
            try:
                # A fresh session per call: requests.Session is not documented thread-safe.
                with requests.Session() as http:
                    response = http.post(self.url, json=payload, headers=headers,
                                         timeout=self.timeout, stream=True)
                break
            except requests.RequestException as e:
                if not _never_sent(e) or attempt == self.max_attempts:
                    raise _backend_error(e) from None
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("AI backend unreachable (attempt %d of %d); retrying in %.2f s",
                         attempt, self.max_attempts, delay)
                self._sleep(delay)
        if response.status_code >= 400:
            with response:
                raise self._http_error(response)
        return response

    def _http_error(self, response: requests.Response) -> BackendError:
        status = response.status_code
        # Only the error's type slug is logged: a backend's message may quote the prompt
        # (plaintext in a log file would break the promise at rest) or echo the key.
        detail = f"HTTP {status} ({self._redact(_error_kind(response))})"
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


@contextlib.contextmanager
def _logged() -> Iterator[None]:
    """Log each backend failure once, for the operator, before it reaches the user."""
    try:
        yield
    except BackendError as e:
        log.warning("AI backend failure, %s: %s", e.code, e.detail or e.message)
        raise


def _check_base_url(base_url: str, api_key: str | None) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OPENAI_BASE_URL must be an http(s) URL, not {base_url!r}")
    if api_key and parts.scheme == "http" and not _is_loopback(parts.hostname):
        # Anyone on the path would read the bearer key.
        raise ConfigError("refusing to send OPENAI_API_KEY over plain http to a remote host; "
                          "use https (or a backend on 127.0.0.1)")


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


def _error_kind(response: requests.Response) -> str:
    """The ``error.code`` or ``error.type`` slug of an OpenAI-style error body, if any."""
    try:
        error = response.json().get("error")
        kind = error.get("code") or error.get("type")
    except (requests.RequestException, ValueError, AttributeError):
        return "no error type"
    return re.sub(r"[^A-Za-z0-9_.-]", "", str(kind))[:60] or "no error type"


def _read_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # requests' JSONDecodeError is also a RequestException: test it first
        raise BackendBadResponse("The AI backend answered something that is not JSON.") from None
    except requests.RequestException as e:
        raise _backend_error(e) from None


def _completion_text(body: Any) -> str:
    """The reply text of a non-streamed completion."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise BackendBadResponse("The AI backend's answer holds no reply text.")
    return content


def _stream_text(response: requests.Response) -> Iterator[str]:
    """The text deltas of a streamed completion; raise unless the stream ends properly."""
    finished = False
    try:
        for event in sse.parse(sse.iter_body(response)):
            if event.data.strip() == "[DONE]":
                return
            text, done = _delta(event.data)
            finished = finished or done
            if text:
                yield text
    except requests.RequestException as e:
        raise _backend_error(e) from None
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
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
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
