"""The ChatBox's frame: its components laid out, one action at a time, in and out of the chat.

The box lays out components of one job each (:class:`SignIn` with its :class:`LoginForm`,
:class:`Conversations`, :class:`MessageList`, :class:`Status`, :class:`ChatInput`,
:class:`Replies`, :class:`TemporaryChat`, :class:`AccountPanel`, :class:`RecoveryCodeView`,
:class:`HistoryTools`, :class:`Search`). Every action runs through :meth:`ChatFrame._run`:
the UI disabled, errors shown inline, the UI re-enabled in ``finally``. One thread is
started, and only for a message typed in the browser: its reply is received there, so the
kernel stays free to read *Stop* meanwhile. A new feature is a component of its own, given
what it needs (the client, ``run``), laid out in ``__init__``, disabled in ``_set_busy``,
closed in ``close``, driven as ``box.<component>.<method>`` and named in :class:`ChatBox`.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as w

from ..client import ChatClient
from ..errors import ApiError, SecureChatError
from .account import AccountPanel
from .chat_input import ChatInput
from .conversations import Conversations
from .messages import MessageList
from .portable import HistoryTools
from .recovery_code import RecoveryCodeView
from .render import describe_error
from .replies import Replies
from .search import Search
from .signin import SignIn
from .status import Status
from .temporary import TemporaryChat

log = logging.getLogger(__name__)
T = TypeVar("T")
# The error codes that mean this session is over; any other 401 (a wrong password on an
# account route: ``invalid_credentials``) leaves the session as it is.
_SESSION_OVER = frozenset({"unauthorized", "session_expired"})


class ChatFrame:
    """The widgets of :class:`ChatBox` (:attr:`root`), how it runs an action, its lifetime."""

    def __init__(self, client: ChatClient, stream: bool = True) -> None:
        self.client = client
        self.logged_in = False
        self._busy = False
        self._busy_lock = threading.Lock()
        self.input = ChatInput(placeholder="Message (Enter sends, Shift+Enter: new line, "
                                           "Esc stops a reply)",
                               layout=w.Layout(width="100%"))
        self.signin = SignIn(client, self._run, enter=self._enter_chat, leave=self._leave_chat,
                             show_code=lambda code, why: self.code_view.show(code, why),
                             focus=self.input.focus)
        self.login_form = self.signin.form
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

        self.status = Status(retry=lambda: self.replies.retry())
        self.thinking, self.notice = self.status.thinking, self.status.notice
        self.retry_button, self.notice_row = self.status.retry_button, self.status.row

        self.code_view = RecoveryCodeView()
        self.account = AccountPanel(client, self._run, show_code=self.code_view.show,
                                    on_gone=lambda notice: self._leave_chat(notice, error=False))
        self.history = HistoryTools(client, self._run,
                                    on_imported=lambda: self.chats.refresh(self.chats.current))
        self.finder = Search(client, self._run, open=self._open_result)
        self.temporary_chat = TemporaryChat(chats, self.bubbles, self._run,
                                            signed_in=lambda: self.logged_in,
                                            on_start=lambda: self.replies.cancel_edit(),
                                            idle=lambda: self._set_busy(False, False))
        self.replies = replies = Replies(client, self.input, self.bubbles, chats, self.status,
                                         self.temporary_chat, self._run, stream,
                                         signed_in=lambda: self.logged_in)
        self.temporary_button = self.temporary_chat.button
        self.temporary_note = self.temporary_chat.note
        self.regenerate_button, self.edit_button = replies.regenerate_button, replies.edit_button
        self.cancel_edit_button = replies.cancel_edit_button
        self.actions_row = replies.actions_row
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
        self.logout_button.on_click(lambda _b: self.signin.logout())
        self.account_button.observe(self._account_toggled, names="value")
        self.input.on_submit(replies.send_in_background)
        self.input.on_stop(replies.stop)
        self.input.on_copied(self._copied)
        if client.username:
            # The client is already logged in: go straight to the chat.
            self._run(self._enter_chat)

    def _widgets(self) -> list[w.Widget]:
        boxes = [self.chat_panel, *self.chat_panel.children, *self._header.children, self.root]
        return [*self.bubbles.widgets(), *self.login_form.widgets(), *self.chats.widgets(),
                *self.status.widgets(), *self.account.widgets(), *self.code_view.widgets(),
                *self.finder.widgets(), *self.history.widgets(), self.who, self.account_button,
                self.logout_button, *self.temporary_chat.widgets(), *self.replies.widgets(),
                self.input, *boxes]

    # --- running one action ------------------------------------------------------

    def _run(self, action: Callable[[], T], thinking: bool = False) -> T | None:
        """Run one action with the UI disabled; errors are shown inline, never raised."""
        with self._busy_lock:  # a reply may be running in the worker thread
            if self._busy:
                return None
            self._busy = True
        self.replies.stopped.clear()
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
        self.input.streaming = thinking and self.replies.stream
        self.input.disabled = self.logout_button.disabled = self.account_button.disabled = busy
        self.login_form.set_busy(busy)
        self.account.set_busy(busy)
        self.history.set_busy(busy)
        self.finder.set_busy(busy)
        self.temporary_chat.set_busy(busy)
        # A temporary chat has no stored conversation to pick, star, regenerate or edit.
        self.chats.set_busy(busy or self.temporary_chat.on)
        self.replies.set_busy(busy)
        self.status.set_busy(busy, thinking)

    def show_notice(self, text: str, error: bool = False) -> None:
        """Show ``text`` (escaped) under the box; an empty string clears it."""
        self.status.show(text, error)

    @property
    def error(self) -> str:
        """The notice currently shown, as plain text ('' when none)."""
        return self.status.text

    # --- in and out of the chat, and what the buttons do -------------------------------

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
        self.temporary_chat.end()
        self.replies.cancel_edit()
        self.finder.clear()
        self.chats.forget()
        self.account.blank()
        self.history.blank()
        self.account_button.value = False
        self.code_view.dismiss()
        self.login_form.reset()
        self.root.children = (self.login_panel, self.notice_row)
        self.show_notice(notice, error=error)

    def _account_toggled(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self.account.hide()
        elif not self.account.open():
            self.account_button.value = False
        self.history.show(self.account.is_open)

    def new_draft(self) -> None:
        """Start an empty conversation; it is created with the first message."""
        self.chats.draft()
        self.show_notice("")
        self._set_busy(False, False)

    def _new_from_button(self) -> None:
        self.new_draft()
        self.input.focus()

    def _open_result(self, conversation_id: str) -> None:
        if self.temporary_chat.on:
            self.temporary_chat.end()
        if self.chats.switch(conversation_id):
            self.input.focus()

    def _copied(self, ok: bool) -> None:
        self.show_notice("Copied." if ok else "The browser did not allow copying; select the "
                         "text and copy it instead.", error=not ok)

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
        self.temporary_chat.blank()
        self.code_view.dismiss()
        self.login_form.reset()
        self.input.value = ""
        for widget in self._widgets():
            widget.close()
        self.bubbles.forget()

    def __repr__(self) -> str:
        who = self.client.username if self.logged_in else "not logged in"
        return f"<ChatBox {self.client.base_url} ({who})>"
