"""The conversations: the picker, *New*, *Star*, *Rename*, and *Delete* with its confirmation.

This component knows which conversation is shown (:attr:`Conversations.current`) and
loads its history into the :class:`MessageList`; every call to the server goes through the
box's ``run``, which disables the UI meanwhile and shows errors under the box.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import ipywidgets as w

from ..client import ChatClient
from .messages import MessageList

T = TypeVar("T")


class Run(Protocol):
    """The box's way to run an action: the UI disabled, errors shown; None when it failed."""

    def __call__(self, action: Callable[[], T]) -> T | None: ...


class Conversations:
    """The conversation row (:attr:`bar`) and its confirmation row (:attr:`confirm_row`).

    ``focus`` puts the cursor in the message box after what a person clicked (never after
    a call from code); ``on_new`` is what *New* does.
    """

    def __init__(self, client: ChatClient, bubbles: MessageList, run: Run,
                 focus: Callable[[], None], on_new: Callable[[], None]) -> None:
        self.client, self._bubbles, self._run, self._focus = client, bubbles, run, focus
        self.current: str | None = None  # the conversation shown; None for a new draft
        self._busy = False
        self._picking = False  # True while the picker is refilled from code
        self._pending: str | None = None  # asked to confirm, not deleted yet
        self._listed: list[dict[str, Any]] = []  # the picker's conversations, as the server sent
        auto = w.Layout(width="auto")
        self.picker = w.Dropdown(description="Chat", options=[], value=None,
                                 layout=w.Layout(flex="1 1 auto", width="auto"))
        self.new_button = w.Button(description="New", tooltip="Start a new conversation",
                                   layout=auto)
        self.delete_button = w.Button(description="Delete", button_style="danger",
                                      tooltip="Delete this conversation", layout=auto)
        self.star_button = w.ToggleButton(description="Star", icon="star-o", layout=auto,
                                          tooltip="Starred: listed first, kept by retention")
        self.rename_button = w.Button(description="Rename", tooltip="Rename this conversation",
                                      layout=auto)
        self.bar = w.HBox([self.picker, self.new_button, self.star_button, self.rename_button,
                           self.delete_button])
        # Renaming happens in this row, opened by *Rename*.
        self.title_field = w.Text(description="Title", layout=w.Layout(flex="1 1 auto"))
        self.save_title_button = w.Button(description="Save", layout=auto)
        self.cancel_title_button = w.Button(description="Cancel", layout=auto)
        self.rename_row = w.HBox([self.title_field, self.save_title_button,
                                  self.cancel_title_button], layout=w.Layout(display="none"))
        # Deleting cannot be undone: the Delete button only shows this row.
        self.confirm_text = w.HTML()
        self.confirm_delete_button = w.Button(description="Delete", button_style="danger",
                                              layout=auto)
        self.cancel_delete_button = w.Button(description="Cancel", layout=auto)
        self.confirm_row = w.HBox(
            [self.confirm_text, self.confirm_delete_button, self.cancel_delete_button],
            layout=w.Layout(display="none", align_items="center", grid_gap="6px"))
        self.new_button.on_click(lambda _b: on_new())
        self.delete_button.on_click(lambda _b: self.ask_delete())
        self.confirm_delete_button.on_click(lambda _b: self._confirm_delete())
        self.cancel_delete_button.on_click(lambda _b: self.hide_confirm())
        self.picker.observe(self._picked, names="value")
        self.star_button.observe(self._star_clicked, names="value")
        self.rename_button.on_click(lambda _b: self.ask_rename())
        self.save_title_button.on_click(lambda _b: self._save_title())
        self.cancel_title_button.on_click(lambda _b: self.hide_rename())

    # --- the list ------------------------------------------------------------------

    def options(self) -> list[tuple[str, str]]:
        """The picker's entries as (title, id), newest first."""
        return list(self.picker.options)

    def _fill(self, conversations: list[dict[str, Any]], value: str | None) -> None:
        self._picking = True
        try:
            self._listed = list(conversations)
            # A starred conversation's title carries a star; the title itself does not.
            self.picker.options = [(("★ " if c.get("starred") else "") + c["title"], c["id"])
                                   for c in conversations]
            self.picker.value = value
            shown = next((c for c in conversations if c["id"] == value), None)
            self.star_button.value = bool(shown and shown.get("starred"))
            self.star_button.icon = "star" if self.star_button.value else "star-o"
        finally:
            self._picking = False

    def _entries(self) -> list[dict[str, Any]]:
        return list(self._listed)

    def refresh(self, select: str | None) -> None:
        """Reload the conversation list and show ``select`` (or the newest)."""
        conversations = self.client.conversations()
        ids = [c["id"] for c in conversations]
        chosen = select if select in ids else (ids[0] if ids else None)
        self._fill(conversations, chosen)
        if chosen is None:
            self.current = None
            self._bubbles.show([])
        else:
            self.load(chosen)

    def load(self, conversation_id: str) -> None:
        """Show a conversation's whole history (every page)."""
        history = self.client.history(conversation_id)
        self.hide_confirm()
        self.hide_rename()
        self.current = conversation_id
        self._bubbles.show(history)
        if self.picker.value != conversation_id:
            entries = self._entries()
            if conversation_id not in {e["id"] for e in entries}:
                entries = self.client.conversations()  # created elsewhere since the last refresh
            self._fill(entries, conversation_id)

    def started(self, conversation: dict[str, Any]) -> None:
        """Show a conversation the first message of a draft just created, first in the list."""
        self.current = conversation["id"]
        self._fill([conversation, *self._entries()], conversation["id"])

    def draft(self) -> None:
        """Show an empty conversation, created with its first message; the list stays."""
        self.hide_confirm()
        self.hide_rename()
        self.current = None
        self._bubbles.show([])
        self._fill(self._entries(), None)

    def forget(self) -> None:
        """Show nothing and list nothing (logged out)."""
        self.hide_confirm()
        self.hide_rename()
        self.current = None
        self._bubbles.show([])
        self._fill([], None)

    def _shown(self, conversation_id: str) -> bool:
        # An action for _run: None from it means failed, so success must say True.
        self.load(conversation_id)
        return True

    def _picked(self, change: dict[str, Any]) -> None:
        if self._picking or change["new"] is None or change["new"] == self.current:
            return
        if self._run(lambda: self._shown(change["new"])):
            self._focus()

    # --- actions -------------------------------------------------------------------

    def create(self, title: str | None = None) -> str | None:
        """Create a conversation now and switch to it; return its id (None on failure)."""
        def action() -> str:
            conv = self.client.new_conversation(title)
            self.refresh(select=conv["id"])
            return str(conv["id"])

        return self._run(action)

    def switch(self, conversation_id: str) -> bool:
        """Show another conversation; False (with the reason shown) when it failed."""
        return self._run(lambda: self._shown(conversation_id)) is True

    # --- star and rename ----------------------------------------------------------------

    def _star_clicked(self, change: dict[str, Any]) -> None:
        if self._picking or self.current is None:
            return
        if not self.star(bool(change["new"])):
            self._fill(self._entries(), self.current)  # the button shows the truth again

    def star(self, starred: bool = True, conversation_id: str | None = None) -> bool:
        """Star (or unstar) a conversation (default: the one shown); starred ones come first."""
        target = conversation_id or self.current
        if target is None:
            return False

        def action() -> bool:
            self.client.update_conversation(target, starred=starred)
            self._fill(self.client.conversations(), self.current)  # the order changed
            return True

        return self._run(action) is True

    def ask_rename(self) -> None:
        """What *Rename* does: open the title field with the current title."""
        if self.current is None or self._busy:
            return
        shown = next((c for c in self._listed if c["id"] == self.current), None)
        self.title_field.value = shown["title"] if shown else ""
        self.rename_row.layout.display = None

    def hide_rename(self) -> None:
        """Close the title field, unsaved."""
        self.title_field.value = ""  # the title must not linger in the widget state
        self.rename_row.layout.display = "none"

    def _save_title(self) -> None:
        if self.current is not None and self.rename(self.title_field.value):
            self.hide_rename()
            self._focus()

    def rename(self, title: str, conversation_id: str | None = None) -> bool:
        """Give a conversation (default: the one shown) a new title; its activity time stays."""
        target = conversation_id or self.current
        if target is None:
            return False

        def action() -> bool:
            renamed = self.client.update_conversation(target, title=title)
            self._fill([renamed if c["id"] == target else c for c in self._entries()],
                       self.current)
            return True

        return self._run(action) is True

    def ask_delete(self) -> None:
        """What *Delete* does: ask to confirm deleting the conversation shown."""
        target = self.current
        if target is None or self._busy:
            return
        title = dict((cid, t) for t, cid in self.picker.options).get(target, "this conversation")
        self._pending = target
        self.confirm_text.value = (f"Delete <b>‘{html.escape(title)}’</b> and all its "
                                   "messages? This cannot be undone.")
        self.confirm_row.layout.display = None

    def _confirm_delete(self) -> None:
        target = self._pending
        self.hide_confirm()
        if target is not None and self.delete(target):
            self._focus()

    def hide_confirm(self) -> None:
        """Take the confirmation row away, unanswered."""
        self._pending = None
        self.confirm_text.value = ""  # the title must not linger in the widget state
        self.confirm_row.layout.display = "none"

    def delete(self, conversation_id: str | None = None) -> bool:
        """Delete a conversation (default: the one shown) at once, and show the newest left."""
        target = conversation_id or self.current
        if target is None:
            return False

        def action() -> bool:
            self.client.delete(target)
            if target == self.current:
                self.current = None
            self.refresh(select=self.current)
            return True

        return self._run(action) is True

    # --- the box's lifetime ----------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        """Disable the controls while an action runs; *Delete* also when nothing is shown."""
        self._busy = busy
        for widget in (self.picker, self.new_button, self.delete_button, self.star_button,
                       self.rename_button, self.save_title_button, self.cancel_title_button,
                       self.confirm_delete_button, self.cancel_delete_button):
            widget.disabled = busy
        if not busy:
            for widget in (self.delete_button, self.star_button, self.rename_button):
                widget.disabled = self.current is None

    def blank(self) -> None:
        """Send the titles empty, before closing: a closed widget's last state is kept."""
        self._fill([], None)
        self.hide_confirm()
        self.hide_rename()

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.picker, self.new_button, self.star_button, self.rename_button,
                self.delete_button, self.bar, self.confirm_text, self.confirm_delete_button,
                self.cancel_delete_button, self.confirm_row, self.title_field,
                self.save_title_button, self.cancel_title_button, self.rename_row]
