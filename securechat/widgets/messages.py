"""The conversation on screen: one HTML bubble per message, the newest at the bottom.

Each bubble's value comes from :func:`message_html` (escaped text, or the safe Markdown
subset), so nothing of a message is ever parsed as HTML of its own. Under each bubble,
*Copy* puts the message on the clipboard, and *Copy code* each of a reply's code blocks.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ReplyStream
from ..errors import ApiError, TransportError
from .render import message_html

# A code block as render_markdown writes it: bare tags around escaped text, so the text
# between them is the code, escaped, and cannot itself hold "</code></pre>".
_CODE_BLOCK = re.compile(r"<pre><code>(.*?)</code></pre>", re.S)
_SMALL = w.Layout(width="auto", height="22px", padding="0 6px")


def code_blocks(bubble_html: str) -> list[str]:
    """The code blocks of a bubble's HTML, as the plain text they show."""
    return [html.unescape(code) for code in _CODE_BLOCK.findall(bubble_html)]


def _discard(widget: w.Widget) -> None:
    """Blank a bubble, then close it (its last state would otherwise keep the text)."""
    if isinstance(widget, w.HTML):
        widget.value = ""
    widget.close()


class MessageList:
    """The bubbles of the conversation shown (in :attr:`view`) and their messages, in order.

    ``copy(text)`` is what the *Copy* buttons call.
    """

    def __init__(self, copy: Callable[[str], None] = lambda _text: None) -> None:
        self.messages: list[dict[str, Any]] = []
        self._bubbles: list[w.HTML] = []
        self._rows: list[w.VBox] = []
        self._copy = copy
        self.active: ReplyStream | None = None  # the reply streaming in, if any
        # column-reverse keeps the newest message in view without any scrolling code.
        self.view = w.VBox(layout=w.Layout(
            flex_flow="column-reverse", overflow="auto", max_height="420px",
            min_height="120px", padding="4px", border="1px solid var(--jp-border-color2, #ddd)"))
        self._empty_hint = w.HTML("<i>No messages yet: type below and press Enter.</i>")

    @property
    def bubbles(self) -> list[w.HTML]:
        """The bubbles, oldest first (each one's ``value`` is what the browser shows)."""
        return list(self._bubbles)

    def show(self, messages: list[dict[str, Any]]) -> None:
        """Replace what is shown with ``messages`` (the old bubbles are blanked and closed)."""
        old = self._rows
        self.messages, self._bubbles, self._rows = [], [], []
        self._render()
        for row in old:
            self._close_row(row)
        for message in messages:
            self.append(message)

    def append(self, message: dict[str, Any]) -> None:
        """Add a bubble at the bottom."""
        self.messages.append(message)
        bubble = w.HTML(layout=w.Layout(width="100%"))
        index = len(self.messages) - 1
        copy = w.Button(description="Copy", tooltip="Copy this message", layout=_SMALL)
        copy.on_click(lambda _b: self.copy(index))
        side = "flex-end" if message.get("role") == "user" else "flex-start"
        actions = w.HBox([copy], layout=w.Layout(justify_content=side, grid_gap="4px"))
        self._bubbles.append(bubble)
        # No shrinking: in the scrolled list a row squeezed below its content would let the
        # next one cover its buttons.
        self._rows.append(w.VBox([bubble, actions], layout=w.Layout(flex="0 0 auto")))
        self.replace_last(message)
        self._render()

    def replace_last(self, message: dict[str, Any]) -> None:
        """Redraw the newest bubble with ``message`` (a reply that grew, or was stored)."""
        self.messages[-1] = message
        bubble = self._bubbles[-1]
        bubble.value = message_html(str(message["role"]), str(message["content"]),
                                    bool(message.get("incomplete")))
        self._code_buttons(len(self._rows) - 1, len(code_blocks(bubble.value)))

    def _code_buttons(self, index: int, count: int) -> None:
        """One *Copy code N* button per code block of the bubble at ``index``."""
        actions = self._rows[index].children[1]
        copy, *old = actions.children
        if len(old) == count:
            return
        buttons = []
        for n in range(count):
            label = "Copy code" if count == 1 else f"Copy code {n + 1}"
            button = w.Button(description=label, tooltip="Copy this code block", layout=_SMALL)
            button.on_click(lambda _b, n=n: self.copy_code(index, n))
            buttons.append(button)
        actions.children = (copy, *buttons)
        for button in old:
            button.close()

    def copy(self, index: int = -1) -> str:
        """Put a message's text (default: the newest) on the clipboard; return it."""
        text = str(self.messages[index]["content"])
        self._copy(text)
        return text

    def copy_code(self, index: int = -1, block: int = 0) -> str:
        """Put one code block of a message on the clipboard; return it."""
        text = code_blocks(self._bubbles[index].value)[block]
        self._copy(text)
        return text

    def drop_last(self) -> None:
        """Take the newest bubble away (a message that never reached the server)."""
        self.messages.pop()
        self._bubbles.pop()
        self._close_row(self._rows.pop())
        self._render()

    def _close_row(self, row: w.VBox) -> None:
        bubble, actions = row.children
        for widget in (bubble, *actions.children, actions, row):
            _discard(widget)

    def _render(self) -> None:
        if self._rows:
            self.view.children = tuple(reversed(self._rows))
        else:
            self.view.children = (self._empty_hint,)

    def receive(self, stream: ReplyStream, refresh_interval: float,
                on_first: Callable[[], None],
                stopped: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Draw a reply while it streams in; return it once stored.

        Its bubble appears with the first text (``on_first`` is called then) and is redrawn
        at most every ``refresh_interval`` seconds, since each redraw sends the whole bubble
        to the browser. When the stream breaks, what arrived stays, marked cut short. When
        ``stopped()`` turns true (Stop, Esc), the stream is closed and what arrived stays,
        marked too: the server keeps it, marked incomplete, as well.
        """
        shown, drawn = False, 0.0
        self.active = stream
        try:
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
                        if stopped():
                            break
                except Exception as e:
                    # Stopped: closing the stream from another thread breaks the read, in
                    # whatever way the HTTP library breaks; that is the stop, not an error.
                    if stopped():
                        pass
                    elif isinstance(e, (ApiError, TransportError)):
                        # What arrived stays on screen, marked: the server kept it marked too.
                        if stream.text:
                            cut = {"role": "assistant", "content": stream.text,
                                   "incomplete": True}
                            self.replace_last(cut) if shown else self.append(cut)
                        raise
                    else:
                        raise
        finally:
            self.active = None
        if stopped() and stream.message is None:
            reply = {"role": "assistant", "content": stream.text, "incomplete": True,
                     "stopped": True}
            if stream.text:
                self.replace_last(reply) if shown else self.append(reply)
            return reply
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
        found: list[w.Widget] = []
        for row in self._rows:
            bubble, actions = row.children
            found += [bubble, *actions.children, actions, row]
        return [*found, self.view, self._empty_hint]

    def forget(self) -> None:
        """Drop the messages and bubbles (after :meth:`blank` and closing the widgets)."""
        self._bubbles, self._rows = [], []
        self.messages = []
