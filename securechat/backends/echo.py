"""The offline, deterministic backend: the reply repeats the user's message."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from .base import Turn


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
