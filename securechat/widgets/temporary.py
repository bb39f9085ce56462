"""*Temporary chat*: a chat stored nowhere, whose history only the box holds.

This component is the toggle, the note shown above the messages, and whether such a chat is
on (:attr:`TemporaryChat.on`); its messages are sent by the send path (:mod:`.replies`).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w

from .conversations import Conversations, Run
from .messages import MessageList


class TemporaryChat:
    """The *Temporary chat* toggle (:attr:`button`) and its note (:attr:`note`).

    ``signed_in()`` says whether the box is logged in; ``on_start()`` runs first when a
    temporary chat starts; ``idle()`` redraws the box's controls as they are between actions.
    """

    def __init__(self, chats: Conversations, bubbles: MessageList, run: Run,
                 signed_in: Callable[[], bool], on_start: Callable[[], None],
                 idle: Callable[[], None]) -> None:
        self._chats, self._bubbles, self._run = chats, bubbles, run
        self._signed_in, self._on_start, self._idle = signed_in, on_start, idle
        self.on = False  # a temporary chat: stored nowhere, the history is the box's
        self.button = w.ToggleButton(
            description="Temporary chat", icon="user-secret", layout=w.Layout(width="auto"),
            tooltip="Nothing is stored: the history stays in this box and goes with it")
        self.note = w.HTML(layout=w.Layout(display="none"))
        self.button.observe(lambda c: self.set(bool(c["new"])), names="value")

    def set(self, on: bool = True) -> None:
        """Start (or end) a temporary chat: nothing is stored, the box holds its history.

        Ending it forgets that chat and shows the stored conversations again.
        """
        if on == self.on:
            return
        if on and not self._signed_in():
            self.button.value = False
            return
        if on:
            self._on_start()
            self.on = True
            self.button.value = True
            self._chats.draft()
            self.note.value = (
                "<i>Temporary chat: nothing is stored on the server, and this chat is gone "
                "when you leave it or close the box.</i>")
            self.note.layout.display = None
            self._idle()
        else:
            self.end()
            self._run(lambda: self._chats.refresh(select=None))

    def end(self) -> None:
        """Forget the temporary chat (stored nowhere, so it is gone) and show no messages."""
        self.on = False
        self.button.value = False
        self.note.value = ""
        self.note.layout.display = "none"
        self._bubbles.show([])

    def set_busy(self, busy: bool) -> None:
        """Disable the toggle while an action runs."""
        self.button.disabled = busy

    def blank(self) -> None:
        """Send the note empty, before closing: a closed widget's last state is kept."""
        self.note.value = ""

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.button, self.note]
