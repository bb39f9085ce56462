"""The reply protocol every AI backend speaks, and the errors a backend failure becomes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypedDict

from ..errors import SecureChatError


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
