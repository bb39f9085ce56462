"""The conversation on screen: one HTML bubble per message, the newest at the bottom.

Each bubble's value comes from :func:`message_html` (escaped text, or the safe Markdown
subset), so nothing of a message is ever parsed as HTML of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ReplyStream
from ..errors import ApiError, TransportError
from .render import message_html


def _discard(bubble: w.HTML) -> None:
    """Blank a message bubble, then close it (its last state would otherwise keep the text)."""
    bubble.value = ""
    bubble.close()


class MessageList:
    """The bubbles of the conversation shown (in :attr:`view`) and their messages, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._bubbles: list[w.HTML] = []
        # column-reverse keeps the newest message in view without any scrolling code.
        self.view = w.VBox(layout=w.Layout(
            flex_flow="column-reverse", overflow="auto", max_height="420px",
            min_height="120px", padding="4px", border="1px solid var(--jp-border-color2, #ddd)"))
        self._empty_hint = w.HTML("<i>No messages yet: type below and press Enter.</i>")

    def show(self, messages: list[dict[str, Any]]) -> None:
        """Replace what is shown with ``messages`` (the old bubbles are blanked and closed)."""
        old = self._bubbles
        self.messages = []
        self._bubbles = []
        self._render()
        for bubble in old:
            _discard(bubble)
        for message in messages:
            self.append(message)

    def append(self, message: dict[str, Any]) -> None:
        """Add a bubble at the bottom."""
        self.messages.append(message)
        self._bubbles.append(w.HTML(layout=w.Layout(width="100%")))
        self.replace_last(message)
        self._render()

    def replace_last(self, message: dict[str, Any]) -> None:
        """Redraw the newest bubble with ``message`` (a reply that grew, or was stored)."""
        self.messages[-1] = message
        self._bubbles[-1].value = message_html(str(message["role"]), str(message["content"]),
                                               bool(message.get("incomplete")))

    def drop_last(self) -> None:
        """Take the newest bubble away (a message that never reached the server)."""
        self.messages.pop()
        _discard(self._bubbles.pop())
        self._render()

    def _render(self) -> None:
        if self._bubbles:
            self.view.children = tuple(reversed(self._bubbles))
        else:
            self.view.children = (self._empty_hint,)

    def receive(self, stream: ReplyStream, refresh_interval: float,
                on_first: Callable[[], None]) -> dict[str, Any]:
        """Draw a reply while it streams in; return it once stored.

        Its bubble appears with the first text (``on_first`` is called then) and is redrawn
        at most every ``refresh_interval`` seconds, since each redraw sends the whole bubble
        to the browser. When the stream breaks, what arrived stays, marked cut short.
        """
        shown, drawn = False, 0.0
        with stream:
            try:
                for _chunk in stream:
                    partial = {"role": "assistant", "content": stream.text}
                    if not shown:
                        on_first()
                        self.append(partial)
                        shown, drawn = True, time.monotonic()
                    elif time.monotonic() - drawn >= refresh_interval:
                        self.replace_last(partial)
                        drawn = time.monotonic()
            except (ApiError, TransportError):
                # What arrived stays on screen, marked: the server kept it marked too.
                if stream.text:
                    cut = {"role": "assistant", "content": stream.text, "incomplete": True}
                    self.replace_last(cut) if shown else self.append(cut)
                raise
        reply = dict(stream.message or {"role": "assistant", "content": stream.text})
        self.replace_last(reply) if shown else self.append(reply)
        return reply

    def transcript(self) -> str:
        """The messages as plain text, one ``role: content`` line each."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def blank(self) -> None:
        """Send every bubble empty, before closing: a closed widget's last state is kept."""
        for bubble in self._bubbles:
            bubble.value = ""

    def widgets(self) -> list[w.Widget]:
        """Every widget of the list, for closing."""
        return [*self._bubbles, self.view, self._empty_hint]

    def forget(self) -> None:
        """Drop the messages and bubbles (after :meth:`blank` and closing the widgets)."""
        self._bubbles = []
        self.messages = []
