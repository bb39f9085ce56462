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
import threading
from collections.abc import Callable
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
from .render import describe_error
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
    The *Delete* button asks for confirmation first; :meth:`delete_conversation`, called
    from code, deletes at once. After a login, a registration, *New* or a conversation
    picked in the dropdown, the cursor goes to the message box (never when driven from
    code: a notebook's next Shift+Enter must still run its next cell).
    """

    # Seconds between two redraws of a reply that is streaming in (each redraw sends the
    # whole bubble to the browser).
    refresh_interval = 0.05

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
        self.who = w.HTML()
        self.account_button = w.ToggleButton(description="Account", layout=w.Layout(width="auto"),
                                             tooltip="Password, recovery code, sessions, "
                                                     "security log, deletion")
        self.logout_button = w.Button(description="Log out", layout=w.Layout(width="auto"))
        self.login_panel = form.view
        self._header = w.HBox([self.who, w.HBox([self.account_button, self.logout_button])],
                              layout=w.Layout(justify_content="space-between"))
        self.chat_panel = w.VBox([
            self._header, self.code_view.view, self.account.view,
            chats.bar, chats.confirm_row, self.message_list, self.thinking, self.input,
        ])
        self.root = w.VBox([self.login_panel, self.notice_row],
                           layout=w.Layout(max_width="760px"))
        self.logout_button.on_click(lambda _b: self.logout())
        self.account_button.observe(self._account_toggled, names="value")
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
                self.who, self.account_button, self.logout_button, self.input, *boxes]

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
        self.chats.set_busy(busy)
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
        self.chats.forget()
        self.account.blank()
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
        self.code_view.dismiss()
        self.login_form.reset()
        self.input.value = ""
        for widget in self._widgets():
            widget.close()
        self.bubbles.forget()

    def __repr__(self) -> str:
        who = self.client.username if self.logged_in else "not logged in"
        return f"<ChatBox {self.client.base_url} ({who})>"
