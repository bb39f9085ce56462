"""The send path: a message out, its reply in (streamed or whole), and what acts on replies.

Sending (in a *Temporary chat*, with the history the box holds: stored nowhere),
*Regenerate*, *Edit last message* (the text replaces the last one sent), *Try again* and
*Stop*. A message typed in the browser is sent from a thread of its own, so the kernel stays
free to read *Stop* meanwhile. Every call to the server goes through the box's ``run``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import ipywidgets as w

from ..client import ChatClient
from ..errors import ApiError, SecureChatError, TransportError
from .chat_input import ChatInput
from .conversations import Conversations
from .messages import MessageList
from .status import Status
from .temporary import TemporaryChat

T = TypeVar("T")


class RunReply(Protocol):
    """The box's ``run``; ``thinking`` shows *thinking…* until the reply starts."""

    def __call__(self, action: Callable[[], T], thinking: bool = ...) -> T | None: ...


class Replies:
    """The send path, and the row under the messages (:attr:`actions_row`): *Regenerate*,
    *Edit last message*. ``signed_in()`` says whether the box is logged in.
    """

    # Seconds between two redraws of a reply that is streaming in (each redraw sends the
    # whole bubble to the browser).
    refresh_interval = 0.05
    # How many messages a temporary chat sends as its history (the server's HISTORY_WINDOW,
    # by default, keeps as many of a stored one).
    ghost_window = 20

    def __init__(self, client: ChatClient, input: ChatInput, bubbles: MessageList,
                 chats: Conversations, status: Status, temporary: TemporaryChat, run: RunReply,
                 stream: bool, signed_in: Callable[[], bool]) -> None:
        self.client, self.input, self._bubbles, self._chats = client, input, bubbles, chats
        self._status, self._temporary, self._run = status, temporary, run
        self._signed_in = signed_in
        self.stream = stream  # show replies as they are generated (Server-Sent Events)
        self.stopped = threading.Event()  # set by Stop / Esc while a reply streams in
        self._worker: threading.Thread | None = None  # a send typed in the browser
        self._busy = False
        self.editing = False  # the next message replaces the last one sent
        auto = w.Layout(width="auto")
        self.regenerate_button = w.Button(description="Regenerate", icon="refresh", layout=auto,
                                          tooltip="Another answer to your last message")
        self.edit_button = w.Button(description="Edit last message", icon="pencil", layout=auto,
                                    tooltip="Change your last message and send it again")
        self.cancel_edit_button = w.Button(description="Cancel edit", layout=w.Layout(
            width="auto", display="none"))
        self.actions_row = w.HBox([self.regenerate_button, self.edit_button,
                                   self.cancel_edit_button])
        self.regenerate_button.on_click(lambda _b: self.regenerate())
        self.edit_button.on_click(lambda _b: self.ask_edit())
        self.cancel_edit_button.on_click(lambda _b: self.cancel_edit())

    # --- sending -----------------------------------------------------------------------

    def send(self, text: str) -> dict[str, Any] | None:
        """Send ``text`` as the person would; return the reply, or None (error shown)."""
        if not text.strip():
            return None
        if not self._signed_in():
            self._status.show("Log in first.", error=True)
            return None
        if self._temporary.on:
            return self._send_temporary(text)
        if self.editing:
            return self.edit_last(text)

        def action() -> dict[str, Any]:
            self.input.value = ""
            self._bubbles.append({"role": "user", "content": text})
            delivered = False  # once the server answers, it has stored the message
            try:
                conversation_id = self._chats.current
                if conversation_id is None:
                    first_line = text.strip().splitlines()[0]
                    conversation = self.client.new_conversation(first_line[:60])
                    self._chats.started(conversation)
                    conversation_id = str(conversation["id"])
                if self.stream:
                    stream = self.client.stream(conversation_id, text)
                    delivered = True
                    return self._bubbles.receive(stream, self.refresh_interval,
                                                 on_first=self._status.stop_thinking,
                                                 stopped=self.stopped.is_set)
                return self._settle(self.client.send(conversation_id, text)["reply"])
            except (ApiError, TransportError) as e:
                if delivered or (isinstance(e, ApiError) and 500 <= e.status < 600):
                    # Stored before the backend failed: ask again rather than send it twice.
                    self._status.offer_retry(True)
                else:
                    # Not stored: the text goes back into the input, ready to send again.
                    self._bubbles.drop_last()
                    self.input.value = text
                raise

        return self._run(action, thinking=True)

    def send_in_background(self, text: str) -> None:
        """What Enter and *Send* do: :meth:`send` in a thread of its own.

        The kernel runs one message from the browser at a time: were the reply received
        here, the *Stop* click (or Esc) would only be read once the reply had ended.
        """
        if self._worker is not None and self._worker.is_alive():
            self.input.value = text  # one reply at a time: the text goes back, unsent
            return
        self._worker = threading.Thread(target=self.send, args=(text,), daemon=True,
                                        name="securechat-chatbox-reply")
        self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a reply asked for from the browser; False if it is still coming."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return worker is None or not worker.is_alive()

    def stop(self) -> None:
        """Stop the reply streaming in (Esc, *Stop*): what arrived stays, marked cut short."""
        self.stopped.set()
        active = self._bubbles.active
        if active is not None:
            active.abort()  # a backend that sends nothing more must not keep the reply open

    def retry(self) -> dict[str, Any] | None:
        """Ask again for the reply a failed server or AI backend left missing."""
        conversation_id = self._chats.current
        if conversation_id is None or not self._signed_in():
            return None

        def action() -> dict[str, Any]:
            try:
                return self._settle(self.client.retry(conversation_id)["reply"])
            except (ApiError, TransportError) as e:
                if isinstance(e, TransportError) or 500 <= e.status < 600:
                    self._status.offer_retry(True)
                raise

        return self._run(action, thinking=True)

    def _settle(self, reply: dict[str, Any]) -> dict[str, Any]:
        self._bubbles.append(reply)
        return dict(reply)

    # --- a temporary chat: the box's history, stored nowhere --------------------------

    def _send_temporary(self, text: str) -> dict[str, Any] | None:
        def action() -> dict[str, Any]:
            self.input.value = ""
            kept = len(self._bubbles.messages)
            history = [{"role": str(m["role"]), "content": str(m["content"])}
                       for m in self._bubbles.messages if m["content"]]
            history = [*history, {"role": "user", "content": text}][-self.ghost_window:]
            self._bubbles.append({"role": "user", "content": text})
            try:
                if self.stream:
                    return self._bubbles.receive(self.client.ghost_stream(history),
                                                 self.refresh_interval,
                                                 on_first=self._status.stop_thinking,
                                                 stopped=self.stopped.is_set)
                return self._settle(self.client.ghost(history)["reply"])
            except (ApiError, TransportError):
                # Stored nowhere: the text goes back into the input, ready to send again.
                while len(self._bubbles.messages) > kept:
                    self._bubbles.drop_last()
                self.input.value = text
                raise

        return self._run(action, thinking=True)

    # --- regenerate, edit ----------------------------------------------------------------

    def regenerate(self) -> dict[str, Any] | None:
        """Replace the last reply with a new answer (the old one goes once the new one exists)."""
        conversation_id = self._chats.current
        messages = self._bubbles.messages
        if (conversation_id is None or not self._signed_in() or self._temporary.on
                or not messages or messages[-1]["role"] != "assistant"):
            return None

        def action() -> dict[str, Any]:
            self._bubbles.drop_last()
            try:
                if self.stream:
                    return self._bubbles.receive(self.client.regenerate_stream(conversation_id),
                                                 self.refresh_interval,
                                                 on_first=self._status.stop_thinking,
                                                 stopped=self.stopped.is_set)
                return self._settle(self.client.regenerate(conversation_id)["reply"])
            except (ApiError, TransportError):
                # The server keeps the old reply until a new one exists: show what it holds.
                self._chats.load(conversation_id)
                raise

        return self._run(action, thinking=True)

    def ask_edit(self) -> None:
        """What *Edit last message* does: put your last message in the box to change it."""
        mine = [m for m in self._bubbles.messages if m["role"] == "user"]
        if not mine or self._temporary.on or self._busy:
            return
        self.editing = True
        self.input.value = str(mine[-1]["content"])
        self.cancel_edit_button.layout.display = None
        self._status.show("Editing your last message: send it to replace it and what followed.")
        self.input.focus()

    def cancel_edit(self) -> None:
        """Leave editing: the next message is sent as a new one."""
        if self.editing:
            self.editing = False
            self.input.value = ""
            self._status.show("")
        self.cancel_edit_button.layout.display = "none"

    def edit_last(self, text: str) -> dict[str, Any] | None:
        """Replace your last message with ``text`` (what followed goes); return the new reply."""
        conversation_id = self._chats.current
        if (conversation_id is None or not self._signed_in() or self._temporary.on
                or not text.strip()):
            return None

        def action() -> dict[str, Any]:
            # Messages sent from this box have no id here: the server names the last one.
            page = self.client.history_page(conversation_id, limit=20)
            mine = [m for m in page["messages"] if m["role"] == "user"]
            if not mine:
                raise SecureChatError("There is no message of yours to edit.")
            answer = self.client.edit_last(conversation_id, str(mine[-1]["id"]), text)
            self.editing = False
            self.cancel_edit_button.layout.display = "none"
            self.input.value = ""
            self._chats.load(conversation_id)
            return dict(answer["reply"])

        return self._run(action, thinking=True)

    # --- the box's lifetime ----------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons while an action runs, and those with no reply to act on."""
        self._busy = busy
        stored = not self._temporary.on
        last = self._bubbles.messages[-1]["role"] if self._bubbles.messages else None
        self.regenerate_button.disabled = busy or not stored or last != "assistant"
        self.edit_button.disabled = busy or not stored or last is None

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.regenerate_button, self.edit_button, self.cancel_edit_button,
                self.actions_row]
