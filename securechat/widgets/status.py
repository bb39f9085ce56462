"""What the box is doing and what went wrong: *thinking…*, a notice, and *Try again*."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import ipywidgets as w


class Status:
    """*thinking…* (shown above the input, :attr:`thinking`) and the row under the box
    (:attr:`row`): a notice, escaped, and the *Try again* button, which calls ``retry``.
    """

    def __init__(self, retry: Callable[[], object]) -> None:
        self.thinking = w.HTML(layout=w.Layout(display="none"))
        self.notice = w.HTML()  # errors and notices, shown under either panel
        self.retry_button = w.Button(description="Try again", tooltip="Ask for the reply again",
                                     layout=w.Layout(display="none", width="auto"))
        self.row = w.HBox([self.notice, self.retry_button], layout=w.Layout(align_items="center"))
        self.retry_button.on_click(lambda _b: retry())

    def show(self, text: str, error: bool = False) -> None:
        """Show ``text`` (escaped) under the box; an empty string clears it."""
        if not text:
            self.notice.value = ""
            return
        color = "var(--jp-error-color1,#b00020)" if error else "var(--jp-ui-font-color1,#333)"
        self.notice.value = (f'<div role="alert" style="color:{color};white-space:pre-wrap">'
                             f"{html.escape(text)}</div>")

    @property
    def text(self) -> str:
        """The notice shown, as plain text ('' when none)."""
        return html.unescape(re.sub(r"<[^>]*>", "", self.notice.value))

    def offer_retry(self, offered: bool) -> None:
        """Show (or hide) *Try again*: a message was stored, its reply is missing."""
        self.retry_button.layout.display = None if offered else "none"

    def set_busy(self, busy: bool, thinking: bool) -> None:
        """Disable *Try again* while an action runs; show *thinking…* while a reply is awaited."""
        self.retry_button.disabled = busy
        self.thinking.value = "<i>thinking…</i>" if thinking else ""
        self.thinking.layout.display = None if thinking else "none"

    def stop_thinking(self) -> None:
        """Hide *thinking…*: the reply has started to appear."""
        self.thinking.layout.display = "none"

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.thinking, self.notice, self.retry_button, self.row]
