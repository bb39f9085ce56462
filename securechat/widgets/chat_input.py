"""ChatInput: the message box (an anywidget): Enter sends, Shift+Enter starts a new line, Esc stops.

Its browser half is ``chat_input.js`` next to this file, and ``chat_input.css`` styles the
Markdown in the ChatBox's bubbles (anywidget adds it to the page with the input).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

_HERE = Path(__file__).parent


class ChatInput(anywidget.AnyWidget):
    """A multi-line text box with a Send button: Enter sends, Shift+Enter starts a new line.

    While ``streaming`` (a reply arrives) a *Stop* button shows, and Esc in the box does the
    same: :meth:`on_stop` handlers are called. :meth:`copy` puts a text on the clipboard.

    ``value`` is what Python puts in the box (cleared after sending, given back after a
    failure); what the person types reaches Python with each submit. While ``disabled``
    (a reply is pending) the box stays editable and only sending waits.
    """

    # Files, not strings: read once when the first ChatInput is made. (anywidget watches
    # them for changes only when asked to, with ANYWIDGET_HMR=1, and never in site-packages.)
    _esm = _HERE / "chat_input.js"
    _css = _HERE / "chat_input.css"
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    # True while a reply streams in: the browser shows *Stop*, and Esc asks for it.
    streaming = traitlets.Bool(False).tag(sync=True)
    # Names this widget in the browser, where each view gets its own proxy of the model.
    _key = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_key=uuid.uuid4().hex, **kwargs)
        # What a handler returns is ignored (ChatBox.send returns the reply, for callers).
        self._submit_handlers: list[Callable[[str], object]] = []
        self._stop_handlers: list[Callable[[], object]] = []
        self._copied_handlers: list[Callable[[bool], object]] = []
        self.on_msg(self._on_frontend_message)
        self.on_msg(self._on_control_message)

    def on_submit(self, handler: Callable[[str], object]) -> None:
        """Call ``handler(text)`` when the person presses Enter (or :meth:`submit` is called)."""
        self._submit_handlers.append(handler)

    def submit(self) -> None:
        """Do what Enter or Send does: hand ``value`` to the submit handlers."""
        if not self.disabled:
            self._hand_on(self.value)

    def focus(self) -> None:
        """Ask the browser to put the cursor in the box (in the view on screen)."""
        self.send({"type": "focus"})

    def _hand_on(self, text: str) -> None:
        for handler in self._submit_handlers:
            handler(text)

    def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Sequence[Any]) -> None:
        if not (isinstance(content, dict) and content.get("type") == "submit"
                and isinstance(content.get("text"), str)):
            return
        text = content["text"]
        if self.disabled:
            # The browser had already emptied its box: give the text back, unsent.
            self.value = text
            return
        # Not copied into ``value``: that would sync back to the browser and could
        # overwrite what the person types while the reply is on its way.
        self._hand_on(text)

    # --- stop and copy ---------------------------------------------------------------

    def on_stop(self, handler: Callable[[], object]) -> None:
        """Call ``handler()`` when the person presses Esc or *Stop* (or :meth:`stop` is called)."""
        self._stop_handlers.append(handler)

    def on_copied(self, handler: Callable[[bool], object]) -> None:
        """Call ``handler(ok)`` when the browser has put a text on the clipboard (or could not)."""
        self._copied_handlers.append(handler)

    def stop(self) -> None:
        """Do what Esc or *Stop* does."""
        for handler in self._stop_handlers:
            handler()

    def copy(self, text: str) -> None:
        """Ask the browser to put ``text`` on the clipboard (it answers through on_copied)."""
        self.send({"type": "copy", "text": text})

    def _on_control_message(self, _widget: Any, content: Any, _buffers: Sequence[Any]) -> None:
        # Stop is honoured while sending waits (that is when it matters).
        if not isinstance(content, dict):
            return
        if content.get("type") == "stop":
            self.stop()
        elif content.get("type") == "copied" and isinstance(content.get("ok"), bool):
            for handler in self._copied_handlers:
                handler(content["ok"])
