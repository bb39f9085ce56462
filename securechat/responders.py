"""AI reply backends behind one small interface; the offline echo is the default."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypedDict

from .errors import ConfigError, SecureChatError


class Turn(TypedDict):
    """One message of the history a responder is shown."""

    role: str  # "user" or "assistant"
    content: str


class BackendError(SecureChatError):
    """The AI backend failed; ``status`` is the HTTP answer the API gives for it."""

    status = 502
    code = "backend_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    """What the chat routes need from a backend."""

    def reply(self, history: Sequence[Turn]) -> str:
        """Return the assistant's reply to the last user turn of ``history``."""
        ...

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the reply in chunks as it is generated."""
        ...


class EchoResponder:
    """Offline and deterministic: the reply repeats the user's message verbatim."""

    prefix = "Echo: "

    def reply(self, history: Sequence[Turn]) -> str:
        """Return ``Echo: <last user message>``."""
        last = next((t["content"] for t in reversed(history) if t["role"] == "user"), "")
        return self.prefix + last

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        """Yield the echo word by word (each word with its following whitespace)."""
        text = self.reply(history)
        yield from re.findall(r"\s*\S+\s*", text) or [text]


def make_responder(config: Mapping[str, Any]) -> Responder:
    """Build the responder named by ``RESPONDER`` in the config."""
    name = str(config.get("RESPONDER", "echo")).lower()
    if name == "echo":
        return EchoResponder()
    raise ConfigError(f"unknown RESPONDER {name!r}; available: echo")
