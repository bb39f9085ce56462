"""ChatBox: log in, pick a conversation, chat, in a notebook. Nothing typed runs as code.

Every message reaches the browser through :func:`message_html`: escaped with
:func:`html.escape`, or (an assistant's reply) parsed by :func:`render_markdown` into
attribute-free tags over escaped text, so no HTML from a message can survive.

The box lays out components of one job each (:class:`LoginForm`, :class:`Conversations`,
:class:`MessageList`, :class:`Status`, :class:`ChatInput`, :class:`AccountPanel`,
:class:`RecoveryCodeView`) and holds the account and the send path. Every action runs
through :meth:`ChatBox._run`: the UI disabled, errors shown inline, the UI re-enabled in
``finally``. One thread is started, and only for a message typed in the browser: its reply
is received there, so the kernel stays free to read *Stop* meanwhile. A new feature is a
component of its own, given what it needs (the client, ``run``), laid out in ``__init__``,
disabled in ``_set_busy``, closed in ``close``, and driven as ``box.<component>.<method>``.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as w

from ..client import ChatClient
from ..errors import ApiError, SecureChatError, TransportError
from ..recovery import RecoveryCode
from .account import AccountPanel, RecoveryCodeView
from .chat_input import ChatInput
from .conversations import Conversations
from .login import LoginForm
from .messages import MessageList
from .portable import HistoryTools
from .render import describe_error
from .search import Search
from .status import Status

log = logging.getLogger(__name__)
T = TypeVar("T")
# The error codes that mean this session is over; any other 401 (a wrong password on an
# account route: ``invalid_credentials``) leaves the session as it is.
_SESSION_OVER = frozenset({"unauthorized", "session_expired"})


class ChatBox:
    """A chat UI over a :class:`ChatClient`: login/register, conversations, messages, input.

    Display it as a cell's last expression. Drive it from code with :meth:`login`,
    :meth:`register`, :meth:`send`, :meth:`new_conversation`, :meth:`switch`,
    :meth:`delete_conversation`, :meth:`logout`; :meth:`close` removes its widgets.
    The account (*Account* button, or from code): :meth:`change_password`,
    :meth:`new_recovery_code`, :meth:`recover`, :meth:`sessions`, :meth:`revoke`,
    :meth:`revoke_other_sessions`, :meth:`security_log`, :meth:`set_retention`,
    :meth:`delete_account`. A new recovery code (at registration, after a password change,
    a recovery or on request) is shown once, masked until *Show* is pressed; the methods
    return it as a :class:`~securechat.recovery.RecoveryCode`, which prints masked too.
    Chatting: :meth:`stop` (*Stop*, Esc), :meth:`regenerate`, :meth:`edit_last` (*Edit last
    message*), :meth:`copy` and :meth:`copy_code`, :meth:`rename`, :meth:`star`,
    :meth:`search`, :meth:`set_temporary` (*Temporary chat*: stored nowhere, the box holds
    the history), :meth:`export`, :meth:`export_archive`, :meth:`import_export`.
    The *Delete* button asks for confirmation first; :meth:`delete_conversation`, called
    from code, deletes at once. After a login, a registration, *New* or a conversation
    picked in the dropdown, the cursor goes to the message box (never when driven from
    code: a notebook's next Shift+Enter must still run its next cell).
    """

    # Seconds between two redraws of a reply that is streaming in (each redraw sends the
    # whole bubble to the browser).
    refresh_interval = 0.05
    # How many messages a temporary chat sends as its history (the server's HISTORY_WINDOW,
    # by default, keeps as many of a stored one).
    ghost_window = 20

    def __init__(self, client: ChatClient, stream: bool = True) -> None:
        self.client = client
        self.stream = stream  # show replies as they are generated (Server-Sent Events)
        self.logged_in = False
        self._busy = False
        self._busy_lock = threading.Lock()
        self._stop = threading.Event()  # set by Stop / Esc while a reply streams in
        self._worker: threading.Thread | None = None  # a send typed in the browser
        self.input = ChatInput(placeholder="Message (Enter sends, Shift+Enter: new line, "
                                           "Esc stops a reply)",
                               layout=w.Layout(width="100%"))
        self.login_form = LoginForm(submit=self._login_from_fields,
                                    recover=self._recover_from_fields)
        self.bubbles = MessageList(copy=self.input.copy)
        self.chats = Conversations(client, self.bubbles, self._run, focus=self.input.focus,
                                   on_new=self._new_from_button)
        # The components' widgets the tests, notebooks and people reach for, by their names.
        form, chats = self.login_form, self.chats
        self.username, self.password = form.username, form.password
        self.login_button, self.register_button = form.login_button, form.register_button
        self.picker, self.new_button, self.delete_button = (
            chats.picker, chats.new_button, chats.delete_button)
        self.star_button, self.rename_button = chats.star_button, chats.rename_button
        self.confirm_row, self.confirm_text = chats.confirm_row, chats.confirm_text
        self.confirm_delete_button = chats.confirm_delete_button
        self.cancel_delete_button = chats.cancel_delete_button
        self.message_list = self.bubbles.view

        self.status = Status(retry=self.retry)
        self.thinking, self.notice = self.status.thinking, self.status.notice
        self.retry_button, self.notice_row = self.status.retry_button, self.status.row

        self.code_view = RecoveryCodeView()
        self.account = AccountPanel(client, self._run, show_code=self.code_view.show,
                                    on_gone=lambda notice: self._leave_chat(notice, error=False))
        self.history = HistoryTools(client, self._run,
                                    on_imported=lambda: self.chats.refresh(self.conversation_id))
        self.finder = Search(client, self._run, open=self._open_result)
        self.temporary = False  # a temporary chat: stored nowhere, the history is the box's
        self._editing = False  # the next message replaces the last one sent
        self.temporary_button = w.ToggleButton(
            description="Temporary chat", icon="user-secret", layout=w.Layout(width="auto"),
            tooltip="Nothing is stored: the history stays in this box and goes with it")
        self.temporary_note = w.HTML(layout=w.Layout(display="none"))
        auto = w.Layout(width="auto")
        self.regenerate_button = w.Button(description="Regenerate", icon="refresh", layout=auto,
                                          tooltip="Another answer to your last message")
        self.edit_button = w.Button(description="Edit last message", icon="pencil", layout=auto,
                                    tooltip="Change your last message and send it again")
        self.cancel_edit_button = w.Button(description="Cancel edit", layout=w.Layout(
            width="auto", display="none"))
        self.actions_row = w.HBox([self.regenerate_button, self.edit_button,
                                   self.cancel_edit_button])
        self.who = w.HTML()
        self.account_button = w.ToggleButton(description="Account", layout=w.Layout(width="auto"),
                                             tooltip="Password, recovery code, sessions, "
                                                     "security log, deletion")
        self.logout_button = w.Button(description="Log out", layout=w.Layout(width="auto"))
        self.login_panel = form.view
        self._header = w.HBox([self.who, w.HBox([self.temporary_button, self.account_button,
                                                 self.logout_button])],
                              layout=w.Layout(justify_content="space-between"))
        self.chat_panel = w.VBox([
            self._header, self.code_view.view, self.account.view, self.history.view,
            self.finder.view,
            chats.bar, chats.rename_row, chats.confirm_row, self.temporary_note,
            self.message_list, self.actions_row, self.thinking, self.input,
        ])
        self.root = w.VBox([self.login_panel, self.notice_row],
                           layout=w.Layout(max_width="760px"))
        self.logout_button.on_click(lambda _b: self.logout())
        self.account_button.observe(self._account_toggled, names="value")
        self.temporary_button.observe(lambda c: self.set_temporary(bool(c["new"])),
                                      names="value")
        self.regenerate_button.on_click(lambda _b: self.regenerate())
        self.edit_button.on_click(lambda _b: self.ask_edit())
        self.cancel_edit_button.on_click(lambda _b: self.cancel_edit())
        self.input.on_submit(self._send_in_background)
        self.input.on_stop(self.stop)
        self.input.on_copied(self._copied)
        if client.username:
            # The client is already logged in: go straight to the chat.
            self._run(self._enter_chat)

    @property
    def conversation_id(self) -> str | None:
        """The id of the conversation shown (None for a new one, not created yet)."""
        return self.chats.current

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages shown, oldest first."""
        return self.bubbles.messages

    def _widgets(self) -> list[w.Widget]:
        boxes = [self.chat_panel, *self.chat_panel.children, *self._header.children, self.root]
        return [*self.bubbles.widgets(), *self.login_form.widgets(), *self.chats.widgets(),
                *self.status.widgets(), *self.account.widgets(), *self.code_view.widgets(),
                *self.finder.widgets(), *self.history.widgets(), self.who, self.account_button,
                self.logout_button, self.temporary_button, self.temporary_note,
                self.regenerate_button, self.edit_button, self.cancel_edit_button, self.input,
                *boxes]

    # --- running one action ------------------------------------------------------

    def _run(self, action: Callable[[], T], thinking: bool = False) -> T | None:
        """Run one action with the UI disabled; errors are shown inline, never raised."""
        with self._busy_lock:  # a reply may be running in the worker thread
            if self._busy:
                return None
            self._busy = True
        self._stop.clear()
        self._set_busy(True, thinking)
        self.show_notice("")
        self.status.offer_retry(False)
        try:
            return action()
        except ApiError as e:
            if e.status == 401 and e.code in _SESSION_OVER and self.logged_in:
                self._leave_chat("Your session expired or was closed; log in again.")
            else:
                self.show_notice(describe_error(e), error=True)
        except SecureChatError as e:
            self.show_notice(describe_error(e), error=True)
        except Exception as e:
            # A bug of ours: keep the box usable and say so; the traceback goes to the log.
            log.exception("ChatBox action failed")
            self.show_notice(f"Unexpected error ({type(e).__name__}); see the log.", error=True)
        finally:
            self._set_busy(False, False)
        return None

    def _set_busy(self, busy: bool, thinking: bool) -> None:
        self._busy = busy
        self.input.streaming = thinking and self.stream
        self.input.disabled = self.logout_button.disabled = self.account_button.disabled = busy
        self.login_form.set_busy(busy)
        self.account.set_busy(busy)
        self.history.set_busy(busy)
        self.finder.set_busy(busy)
        self.temporary_button.disabled = busy
        # A temporary chat has no stored conversation to pick, star, regenerate or edit.
        stored = not self.temporary
        self.chats.set_busy(busy or not stored)
        last = self.bubbles.messages[-1]["role"] if self.bubbles.messages else None
        self.regenerate_button.disabled = busy or not stored or last != "assistant"
        self.edit_button.disabled = busy or not stored or last is None
        self.status.set_busy(busy, thinking)

    def show_notice(self, text: str, error: bool = False) -> None:
        """Show ``text`` (escaped) under the box; an empty string clears it."""
        self.status.show(text, error)

    @property
    def error(self) -> str:
        """The notice currently shown, as plain text ('' when none)."""
        return self.status.text

    # --- account -----------------------------------------------------------------

    def login(self, username: str, password: str) -> bool:
        """Log in and switch to the chat; False (with the reason shown) when it failed."""
        def action() -> bool:
            self.client.login(username, password)  # 401 "wrong username or password" is shown
            self._enter_chat()
            return True

        return bool(self._run(action))

    def register(self, username: str, password: str) -> bool:
        """Create an account, then log in; False (with the reason shown) when it failed.

        The recovery code the server makes is shown once, masked (:attr:`recovery_code`).
        """
        created = self._run(lambda: self.client.register(username, password))
        if not created:
            return False
        entered = self.login(username, password)
        if entered:
            self.code_view.show(RecoveryCode(created["recovery_code"]),
                                "Account created. This is your recovery code.")
        return entered

    @property
    def recovery_code(self) -> RecoveryCode | None:
        """The recovery code on show (masked when printed), None once *I saved it* is pressed."""
        return self.code_view.code

    def recover(self, username: str, recovery_code: str, new_password: str) -> bool:
        """Set a new password with the recovery code and log in; the next code is shown."""
        def action() -> bool:
            code = RecoveryCode(self.client.recover(username, recovery_code, new_password))
            self._enter_chat()
            self.code_view.show(code, "Password set; your history is all here. The code you "
                                      "used is spent: this is your new recovery code.")
            return True

        return self._run(action) is True

    def _recover_from_fields(self, username: str, recovery_code: str, new_password: str) -> None:
        if self.recover(username, recovery_code, new_password):
            self.input.focus()

    # --- the account panel (the AccountPanel component) ----------------------------------

    def _account_toggled(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self.account.hide()
        elif not self.account.open():
            self.account_button.value = False
        self.history.show(self.account.is_open)

    def change_password(self, current_password: str, new_password: str) -> RecoveryCode | None:
        """Set a new password (other sessions end); return the new recovery code, shown once."""
        return self.account.change_password(current_password, new_password)

    def new_recovery_code(self, password: str) -> RecoveryCode | None:
        """Make a new recovery code (the old one stops working); return it, shown once."""
        return self.account.new_recovery_code(password)

    def sessions(self) -> list[dict[str, Any]]:
        """Where this account is logged in, newest first (``current`` marks this box's)."""
        return self.account.sessions() or []

    def revoke(self, session_id: str) -> bool:
        """End one session (this box's own: back to the login panel)."""
        return self.account.revoke(session_id)

    def revoke_other_sessions(self) -> bool:
        """End every session but this box's."""
        return self.account.revoke_others()

    def security_log(self, more: bool = False) -> list[dict[str, Any]]:
        """The security log shown in the panel, newest first (``more``: one page older too)."""
        return self.account.security_log(more) or []

    def set_retention(self, days: int | None) -> bool:
        """Delete unstarred conversations idle for ``days`` days (None: keep everything)."""
        return self.account.set_retention(days)

    def delete_account(self, password: str) -> bool:
        """Delete the account and all in it, at once (the panel's button asks to type the name)."""
        return self.account.delete_account(password)

    def logout(self) -> None:
        """Log out (the server revokes the session) and show the login panel."""
        def action() -> None:
            try:
                self.client.logout()
            finally:
                # Even when the server is unreachable, this box forgets the session.
                self._leave_chat("Logged out.", error=False)

        self._run(action)

    def _login_from_fields(self, username: str, password: str, register: bool) -> None:
        entered = self.register(username, password) if register else self.login(username, password)
        if entered:
            self.input.focus()  # ready to type the first message

    def _enter_chat(self) -> None:
        self.client.session()  # confirms the session and refreshes the CSRF token
        self.logged_in = True
        self.who.value = f"Signed in as <b>{html.escape(self.client.username or '')}</b>"
        self.username.value = ""
        self.root.children = (self.chat_panel, self.notice_row)
        self.chats.refresh(select=None)

    def _leave_chat(self, notice: str, error: bool = True) -> None:
        self.logged_in = False
        self.client.csrf_token = self.client.username = None
        self._end_temporary()
        self.cancel_edit()
        self.finder.clear()
        self.chats.forget()
        self.account.blank()
        self.history.blank()
        self.account_button.value = False
        self.code_view.dismiss()
        self.login_form.reset()
        self.root.children = (self.login_panel, self.notice_row)
        self.show_notice(notice, error=error)

    # --- conversations (the Conversations component) ------------------------------------

    def conversations(self) -> list[tuple[str, str]]:
        """The picker's entries as (title, id), newest first."""
        return self.chats.options()

    def new_conversation(self, title: str | None = None) -> str | None:
        """Create a conversation now and switch to it; return its id (None on failure)."""
        return self.chats.create(title)

    def new_draft(self) -> None:
        """Start an empty conversation; it is created with the first message."""
        self.chats.draft()
        self.show_notice("")
        self._set_busy(False, False)

    def _new_from_button(self) -> None:
        self.new_draft()
        self.input.focus()

    def switch(self, conversation_id: str) -> bool:
        """Show another conversation; False (with the reason shown) when it failed."""
        return self.chats.switch(conversation_id)

    def ask_delete(self) -> None:
        """What *Delete* does: ask to confirm deleting the conversation shown."""
        self.chats.ask_delete()

    def delete_conversation(self, conversation_id: str | None = None) -> bool:
        """Delete a conversation (default: the one shown) at once, and show the newest left.

        Called from code it does not ask; the *Delete* button asks first (:meth:`ask_delete`).
        """
        return self.chats.delete(conversation_id)

    # --- messages ------------------------------------------------------------------

    def send(self, text: str) -> dict[str, Any] | None:
        """Send ``text`` as the person would; return the reply, or None (error shown)."""
        if not text.strip():
            return None
        if not self.logged_in:
            self.show_notice("Log in first.", error=True)
            return None
        if self.temporary:
            return self._send_temporary(text)
        if self._editing:
            return self.edit_last(text)

        def action() -> dict[str, Any]:
            self.input.value = ""
            self.bubbles.append({"role": "user", "content": text})
            delivered = False  # once the server answers, it has stored the message
            try:
                conversation_id = self.conversation_id
                if conversation_id is None:
                    first_line = text.strip().splitlines()[0]
                    conversation = self.client.new_conversation(first_line[:60])
                    self.chats.started(conversation)
                    conversation_id = str(conversation["id"])
                if self.stream:
                    stream = self.client.stream(conversation_id, text)
                    delivered = True
                    return self.bubbles.receive(stream, self.refresh_interval,
                                                on_first=self.status.stop_thinking,
                                                stopped=self._stop.is_set)
                return self._settle(self.client.send(conversation_id, text)["reply"])
            except (ApiError, TransportError) as e:
                if delivered or (isinstance(e, ApiError) and 500 <= e.status < 600):
                    # Stored before the backend failed: ask again rather than send it twice.
                    self.status.offer_retry(True)
                else:
                    # Not stored: the text goes back into the input, ready to send again.
                    self.bubbles.drop_last()
                    self.input.value = text
                raise

        return self._run(action, thinking=True)

    # --- temporary chats, regenerate, edit ------------------------------------------

    def set_temporary(self, on: bool = True) -> None:
        """Start (or end) a temporary chat: nothing is stored, the box holds its history.

        Ending it forgets that chat and shows the stored conversations again.
        """
        if on == self.temporary:
            return
        if on and not self.logged_in:
            self.temporary_button.value = False
            return
        if on:
            self.cancel_edit()
            self.temporary = True
            self.temporary_button.value = True
            self.chats.draft()
            self.temporary_note.value = (
                "<i>Temporary chat: nothing is stored on the server, and this chat is gone "
                "when you leave it or close the box.</i>")
            self.temporary_note.layout.display = None
            self._set_busy(False, False)
        else:
            self._end_temporary()
            self._run(lambda: self.chats.refresh(select=None))

    def _end_temporary(self) -> None:
        self.temporary = False
        self.temporary_button.value = False
        self.temporary_note.value = ""
        self.temporary_note.layout.display = "none"
        self.bubbles.show([])

    def _send_temporary(self, text: str) -> dict[str, Any] | None:
        def action() -> dict[str, Any]:
            self.input.value = ""
            kept = len(self.bubbles.messages)
            history = [{"role": str(m["role"]), "content": str(m["content"])}
                       for m in self.bubbles.messages if m["content"]]
            history = [*history, {"role": "user", "content": text}][-self.ghost_window:]
            self.bubbles.append({"role": "user", "content": text})
            try:
                if self.stream:
                    return self.bubbles.receive(self.client.ghost_stream(history),
                                                self.refresh_interval,
                                                on_first=self.status.stop_thinking,
                                                stopped=self._stop.is_set)
                return self._settle(self.client.ghost(history)["reply"])
            except (ApiError, TransportError):
                # Stored nowhere: the text goes back into the input, ready to send again.
                while len(self.bubbles.messages) > kept:
                    self.bubbles.drop_last()
                self.input.value = text
                raise

        return self._run(action, thinking=True)

    def regenerate(self) -> dict[str, Any] | None:
        """Replace the last reply with a new answer (the old one goes once the new one exists)."""
        conversation_id = self.conversation_id
        if (conversation_id is None or not self.logged_in or self.temporary
                or not self.messages or self.messages[-1]["role"] != "assistant"):
            return None

        def action() -> dict[str, Any]:
            self.bubbles.drop_last()
            try:
                if self.stream:
                    return self.bubbles.receive(self.client.regenerate_stream(conversation_id),
                                                self.refresh_interval,
                                                on_first=self.status.stop_thinking,
                                                stopped=self._stop.is_set)
                return self._settle(self.client.regenerate(conversation_id)["reply"])
            except (ApiError, TransportError):
                # The server keeps the old reply until a new one exists: show what it holds.
                self.chats.load(conversation_id)
                raise

        return self._run(action, thinking=True)

    def ask_edit(self) -> None:
        """What *Edit last message* does: put your last message in the box to change it."""
        mine = [m for m in self.messages if m["role"] == "user"]
        if not mine or self.temporary or self._busy:
            return
        self._editing = True
        self.input.value = str(mine[-1]["content"])
        self.cancel_edit_button.layout.display = None
        self.show_notice("Editing your last message: send it to replace it and what followed.")
        self.input.focus()

    def cancel_edit(self) -> None:
        """Leave editing: the next message is sent as a new one."""
        if self._editing:
            self._editing = False
            self.input.value = ""
            self.show_notice("")
        self.cancel_edit_button.layout.display = "none"

    def edit_last(self, text: str) -> dict[str, Any] | None:
        """Replace your last message with ``text`` (what followed goes); return the new reply."""
        conversation_id = self.conversation_id
        if conversation_id is None or not self.logged_in or self.temporary or not text.strip():
            return None

        def action() -> dict[str, Any]:
            # Messages sent from this box have no id here: the server names the last one.
            page = self.client.history_page(conversation_id, limit=20)
            mine = [m for m in page["messages"] if m["role"] == "user"]
            if not mine:
                raise SecureChatError("There is no message of yours to edit.")
            answer = self.client.edit_last(conversation_id, str(mine[-1]["id"]), text)
            self._editing = False
            self.cancel_edit_button.layout.display = "none"
            self.input.value = ""
            self.chats.load(conversation_id)
            return dict(answer["reply"])

        return self._run(action, thinking=True)

    # --- conversations and history: star, rename, search, export, import --------------

    def star(self, starred: bool = True, conversation_id: str | None = None) -> bool:
        """Star (or unstar) a conversation (default: the one shown); starred ones come first."""
        return self.chats.star(starred, conversation_id)

    def rename(self, title: str, conversation_id: str | None = None) -> bool:
        """Rename a conversation (default: the one shown)."""
        return self.chats.rename(title, conversation_id)

    def search(self, query: str, more: bool = False) -> list[dict[str, Any]]:
        """Search your titles and messages; the results are shown with *Open*; return them."""
        return self.finder.search(query, more) or []

    def _open_result(self, conversation_id: str) -> None:
        if self.temporary:
            self._end_temporary()
        if self.switch(conversation_id):
            self.input.focus()

    def export(self, path: str | os.PathLike[str], format: str = "json") -> Path | None:
        """Write your whole history (``json`` or ``markdown``: plain text!) to ``path``."""
        return self.history.export(path, format)

    def export_archive(self, path: str | os.PathLike[str], passphrase: str) -> Path | None:
        """Write your whole history, encrypted under ``passphrase``, to ``path``."""
        return self.history.export_archive(path, passphrase)

    def import_export(self, source: str | os.PathLike[str] | bytes | dict[str, Any],
                      passphrase: str | None = None) -> dict[str, int] | None:
        """Import an export (or, with ``passphrase``, an archive) as new conversations."""
        return self.history.import_export(source, passphrase)

    def _send_in_background(self, text: str) -> None:
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
        self._stop.set()
        active = self.bubbles.active
        if active is not None:
            active.abort()  # a backend that sends nothing more must not keep the reply open

    def copy(self, index: int = -1) -> str:
        """Put a message (default: the newest) on the clipboard, as *Copy* does; return it."""
        return self.bubbles.copy(index)

    def copy_code(self, index: int = -1, block: int = 0) -> str:
        """Put one code block of a message on the clipboard, as *Copy code* does; return it."""
        return self.bubbles.copy_code(index, block)

    def _copied(self, ok: bool) -> None:
        self.show_notice("Copied." if ok else "The browser did not allow copying; select the "
                         "text and copy it instead.", error=not ok)

    def retry(self) -> dict[str, Any] | None:
        """Ask again for the reply a failed server or AI backend left missing."""
        conversation_id = self.conversation_id
        if conversation_id is None or not self.logged_in:
            return None

        def action() -> dict[str, Any]:
            try:
                return self._settle(self.client.retry(conversation_id)["reply"])
            except (ApiError, TransportError) as e:
                if isinstance(e, TransportError) or 500 <= e.status < 600:
                    self.status.offer_retry(True)
                raise

        return self._run(action, thinking=True)

    def _settle(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.bubbles.append(reply)
        return dict(reply)

    def transcript(self) -> str:
        """The shown conversation as plain text, one ``role: content`` line per message."""
        return self.bubbles.transcript()

    # --- display and lifetime ---------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.root._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        # The plain-text form is saved in the notebook: never the widgets' reprs, which
        # hold the chat (bubbles, titles) in clear.
        if isinstance(data, dict) and "text/plain" in data:
            data["text/plain"] = repr(self)
        return bundle

    def close(self) -> None:
        """Blank the chat shown, then close every widget (the client stays the caller's)."""
        # A widget's last synced state outlives its close: Jupyter's "save widget state"
        # and nbconvert's executor keep it and write it into the .ipynb. So the messages,
        # titles and draft are sent empty while the widgets can still be updated.
        self.bubbles.blank()
        self.chats.blank()
        self.account.blank()
        self.history.blank()
        self.finder.clear()
        self.temporary_note.value = ""
        self.code_view.dismiss()
        self.login_form.reset()
        self.input.value = ""
        for widget in self._widgets():
            widget.close()
        self.bubbles.forget()

    def __repr__(self) -> str:
        who = self.client.username if self.logged_in else "not logged in"
        return f"<ChatBox {self.client.base_url} ({who})>"
