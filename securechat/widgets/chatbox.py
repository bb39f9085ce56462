"""An ipywidgets chat box: log in, pick a conversation, chat. Nothing typed runs as code.

Every message is escaped with :func:`html.escape` before it reaches an ``HTML``
widget (whose value the browser sets as ``innerHTML``); assistant replies may use
a small Markdown subset that :func:`render_markdown` (from :mod:`securechat.widgets.markdown`)
parses into a tree of attribute-free tags over escaped text, so no HTML from a message
can survive. Callbacks show errors inline and re-enable the UI
in ``finally``; nothing here starts a thread.
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as w

from ..client import ChatClient, ReplyStream
from ..errors import ApiError, SecureChatError, TransportError
from .chat_input import ChatInput
from .render import describe_error, message_html

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- the chat box -----------------------------------------------------------------

def _discard(bubble: w.HTML) -> None:
    """Blank a message bubble, then close it (its last state would otherwise keep the text)."""
    bubble.value = ""
    bubble.close()


class ChatBox:
    """A chat UI over a :class:`ChatClient`: login/register, conversations, messages, input.

    Display it as a cell's last expression. Drive it from code with :meth:`login`,
    :meth:`register`, :meth:`send`, :meth:`new_conversation`, :meth:`switch`,
    :meth:`delete_conversation`, :meth:`logout`; :meth:`close` removes its widgets.
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
        self.conversation_id: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.logged_in = False
        self._busy = False
        self._picking = False  # True while the picker is refilled from code
        self._bubbles: list[w.HTML] = []
        self._pending_delete: str | None = None  # asked to confirm, not deleted yet

        # Login / register panel.
        self.username = w.Text(description="Username", placeholder="3-32 of A-Z a-z 0-9 _ . -")
        self.password = w.Password(description="Password", placeholder="at least 8 characters")
        self.login_button = w.Button(description="Log in", button_style="primary")
        self.register_button = w.Button(description="Register")
        self.login_panel = w.VBox([
            w.HTML("<b>Log in or create an account</b>"), self.username, self.password,
            w.HBox([self.login_button, self.register_button]),
        ])

        # Chat panel.
        self.who = w.HTML()
        self.logout_button = w.Button(description="Log out", layout=w.Layout(width="auto"))
        self.picker = w.Dropdown(description="Chat", options=[], value=None,
                                 layout=w.Layout(flex="1 1 auto", width="auto"))
        self.new_button = w.Button(description="New", tooltip="Start a new conversation",
                                   layout=w.Layout(width="auto"))
        self.delete_button = w.Button(description="Delete", button_style="danger",
                                      tooltip="Delete this conversation",
                                      layout=w.Layout(width="auto"))
        # Deleting cannot be undone: the Delete button only shows this row.
        self.confirm_text = w.HTML()
        self.confirm_delete_button = w.Button(description="Delete", button_style="danger",
                                              layout=w.Layout(width="auto"))
        self.cancel_delete_button = w.Button(description="Cancel", layout=w.Layout(width="auto"))
        self.confirm_row = w.HBox(
            [self.confirm_text, self.confirm_delete_button, self.cancel_delete_button],
            layout=w.Layout(display="none", align_items="center", grid_gap="6px"))
        # column-reverse keeps the newest message in view without any scrolling code.
        self.message_list = w.VBox(layout=w.Layout(
            flex_flow="column-reverse", overflow="auto", max_height="420px",
            min_height="120px", padding="4px", border="1px solid var(--jp-border-color2, #ddd)"))
        self._empty_hint = w.HTML("<i>No messages yet: type below and press Enter.</i>")
        self.thinking = w.HTML(layout=w.Layout(display="none"))
        self.input = ChatInput(placeholder="Message (Enter sends, Shift+Enter: new line)",
                               layout=w.Layout(width="100%"))
        self.chat_panel = w.VBox([
            w.HBox([self.who, self.logout_button],
                   layout=w.Layout(justify_content="space-between")),
            w.HBox([self.picker, self.new_button, self.delete_button]),
            self.confirm_row,
            self.message_list, self.thinking,
            self.input,
        ])

        self.notice = w.HTML()  # errors and notices, shown under either panel
        self.retry_button = w.Button(description="Try again", tooltip="Ask for the reply again",
                                     layout=w.Layout(display="none", width="auto"))
        self.notice_row = w.HBox([self.notice, self.retry_button],
                                 layout=w.Layout(align_items="center"))
        self.root = w.VBox([self.login_panel, self.notice_row],
                           layout=w.Layout(max_width="760px"))
        self._wire()
        if client.username:
            # The client is already logged in: go straight to the chat.
            self._run(self._enter_chat)

    # --- wiring --------------------------------------------------------------------

    def _wire(self) -> None:
        self.login_button.on_click(lambda _b: self._login_from_fields(register=False))
        self.register_button.on_click(lambda _b: self._login_from_fields(register=True))
        self.logout_button.on_click(lambda _b: self.logout())
        self.new_button.on_click(lambda _b: self._new_from_button())
        self.delete_button.on_click(lambda _b: self.ask_delete())
        self.confirm_delete_button.on_click(lambda _b: self._confirm_delete())
        self.cancel_delete_button.on_click(lambda _b: self._hide_confirm())
        self.input.on_submit(self.send)
        self.retry_button.on_click(lambda _b: self.retry())
        self.picker.observe(self._picked, names="value")

    def _widgets(self) -> list[w.Widget]:
        singles = [self.username, self.password, self.login_button, self.register_button,
                   self.who, self.logout_button, self.picker, self.new_button,
                   self.delete_button, self.message_list, self.thinking, self.input,
                   self.notice, self.retry_button, self.notice_row, self._empty_hint,
                   self.confirm_text, self.confirm_delete_button, self.cancel_delete_button,
                   self.confirm_row]
        containers = [self.login_panel, *self.login_panel.children, self.chat_panel,
                      *self.chat_panel.children, self.root]
        return [*self._bubbles, *singles, *containers]

    def _login_from_fields(self, register: bool) -> None:
        username, password = self.username.value, self.password.value
        # The password must not linger in the widget state (saved notebooks can keep it).
        self.password.value = ""
        entered = self.register(username, password) if register else self.login(username, password)
        if entered:
            self.input.focus()  # ready to type the first message

    def _picked(self, change: dict[str, Any]) -> None:
        if self._picking or change["new"] is None or change["new"] == self.conversation_id:
            return
        if self._run(lambda: self._load(change["new"]) or True):
            self.input.focus()

    def _new_from_button(self) -> None:
        self.new_draft()
        self.input.focus()

    # --- running one action ------------------------------------------------------

    def _run(self, action: Callable[[], T], thinking: bool = False) -> T | None:
        """Run one action with the UI disabled; errors are shown inline, never raised."""
        if self._busy:
            return None
        self._set_busy(True, thinking)
        self.show_notice("")
        self.retry_button.layout.display = "none"
        try:
            return action()
        except ApiError as e:
            if e.status == 401 and self.logged_in:
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
        for widget in (self.input, self.picker, self.new_button,
                       self.delete_button, self.logout_button, self.login_button,
                       self.register_button, self.username, self.password,
                       self.retry_button, self.confirm_delete_button,
                       self.cancel_delete_button):
            widget.disabled = busy
        if not busy:
            self.delete_button.disabled = self.conversation_id is None
        self.thinking.value = "<i>thinking…</i>" if thinking else ""
        self.thinking.layout.display = None if thinking else "none"

    def show_notice(self, text: str, error: bool = False) -> None:
        """Show ``text`` (escaped) under the box; an empty string clears it."""
        if not text:
            self.notice.value = ""
            return
        color = "var(--jp-error-color1,#b00020)" if error else "var(--jp-ui-font-color1,#333)"
        self.notice.value = (f'<div role="alert" style="color:{color};white-space:pre-wrap">'
                             f"{html.escape(text)}</div>")

    @property
    def error(self) -> str:
        """The notice currently shown, as plain text ('' when none)."""
        return html.unescape(re.sub(r"<[^>]*>", "", self.notice.value))

    # --- account -----------------------------------------------------------------

    def login(self, username: str, password: str) -> bool:
        """Log in and switch to the chat; False (with the reason shown) when it failed."""
        def action() -> bool:
            self.client.login(username, password)  # 401 "wrong username or password" is shown
            self._enter_chat()
            return True

        return bool(self._run(action))

    def register(self, username: str, password: str) -> bool:
        """Create an account, then log in; False (with the reason shown) when it failed."""
        if not self._run(lambda: self.client.register(username, password)):
            return False
        return self.login(username, password)

    def logout(self) -> None:
        """Log out (the server revokes the session) and show the login panel."""
        def action() -> None:
            try:
                self.client.logout()
            finally:
                # Even when the server is unreachable, this box forgets the session.
                self._leave_chat("Logged out.")

        self._run(action)

    def _enter_chat(self) -> None:
        self.client.session()  # confirms the session and refreshes the CSRF token
        self.logged_in = True
        self.who.value = f"Signed in as <b>{html.escape(self.client.username or '')}</b>"
        self.username.value = ""
        self.root.children = (self.chat_panel, self.notice_row)
        self._refresh(select=None)

    def _leave_chat(self, notice: str) -> None:
        self._hide_confirm()
        self.logged_in = False
        self.client.csrf_token = self.client.username = None
        self.conversation_id = None
        self._show_messages([])
        self._fill_picker([], None)
        self.root.children = (self.login_panel, self.notice_row)
        self.show_notice(notice, error=notice != "Logged out.")

    # --- conversations -------------------------------------------------------------

    def _fill_picker(self, conversations: list[dict[str, Any]], value: str | None) -> None:
        self._picking = True
        try:
            self.picker.options = [(c["title"], c["id"]) for c in conversations]
            self.picker.value = value
        finally:
            self._picking = False

    def _refresh(self, select: str | None) -> None:
        """Reload the conversation list and show ``select`` (or the newest)."""
        conversations = self.client.conversations()
        ids = [c["id"] for c in conversations]
        chosen = select if select in ids else (ids[0] if ids else None)
        self._fill_picker(conversations, chosen)
        if chosen is None:
            self.conversation_id = None
            self._show_messages([])
        else:
            self._load(chosen)

    def _entries(self) -> list[dict[str, Any]]:
        return [{"title": title, "id": conv_id} for title, conv_id in self.picker.options]

    def _load(self, conversation_id: str) -> None:
        """Show a conversation's whole history (every page)."""
        history = self.client.history(conversation_id)
        self._hide_confirm()
        self.conversation_id = conversation_id
        self._show_messages(history)
        if self.picker.value != conversation_id:
            entries = self._entries()
            if conversation_id not in {e["id"] for e in entries}:
                entries = self.client.conversations()  # created elsewhere since the last refresh
            self._fill_picker(entries, conversation_id)

    def conversations(self) -> list[tuple[str, str]]:
        """The picker's entries as (title, id), newest first."""
        return list(self.picker.options)

    def new_conversation(self, title: str | None = None) -> str | None:
        """Create a conversation now and switch to it; return its id (None on failure)."""
        def action() -> str:
            conv = self.client.new_conversation(title)
            self._refresh(select=conv["id"])
            return str(conv["id"])

        return self._run(action)

    def new_draft(self) -> None:
        """Start an empty conversation; it is created with the first message."""
        self._hide_confirm()
        self.conversation_id = None
        self._show_messages([])
        self._fill_picker(self._entries(), None)
        self.show_notice("")
        self._set_busy(False, False)

    def switch(self, conversation_id: str) -> bool:
        """Show another conversation; False (with the reason shown) when it failed."""
        return self._run(lambda: self._load(conversation_id) or True) is True

    def ask_delete(self) -> None:
        """What *Delete* does: ask to confirm deleting the conversation shown."""
        target = self.conversation_id
        if target is None or self._busy:
            return
        title = dict((cid, t) for t, cid in self.picker.options).get(target, "this conversation")
        self._pending_delete = target
        self.confirm_text.value = (f"Delete <b>‘{html.escape(title)}’</b> and all its "
                                   "messages? This cannot be undone.")
        self.confirm_row.layout.display = None

    def _confirm_delete(self) -> None:
        target = self._pending_delete
        self._hide_confirm()
        if target is not None and self.delete_conversation(target):
            self.input.focus()

    def _hide_confirm(self) -> None:
        self._pending_delete = None
        self.confirm_text.value = ""  # the title must not linger in the widget state
        self.confirm_row.layout.display = "none"

    def delete_conversation(self, conversation_id: str | None = None) -> bool:
        """Delete a conversation (default: the one shown) at once, and show the newest left.

        Called from code it does not ask; the *Delete* button asks first (:meth:`ask_delete`).
        """
        target = conversation_id or self.conversation_id
        if target is None:
            return False

        def action() -> bool:
            self.client.delete(target)
            if target == self.conversation_id:
                self.conversation_id = None
            self._refresh(select=self.conversation_id)
            return True

        return self._run(action) is True

    # --- messages ------------------------------------------------------------------

    def _show_messages(self, messages: list[dict[str, Any]]) -> None:
        old = self._bubbles
        self.messages = []
        self._bubbles = []
        self._render()
        for bubble in old:
            _discard(bubble)
        for message in messages:
            self._append(message)

    def _append(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._bubbles.append(w.HTML(layout=w.Layout(width="100%")))
        self._replace_last(message)
        self._render()

    def _replace_last(self, message: dict[str, Any]) -> None:
        self.messages[-1] = message
        self._bubbles[-1].value = message_html(str(message["role"]), str(message["content"]),
                                               bool(message.get("incomplete")))

    def _drop_last(self) -> None:
        self.messages.pop()
        _discard(self._bubbles.pop())
        self._render()

    def _render(self) -> None:
        if self._bubbles:
            self.message_list.children = tuple(reversed(self._bubbles))
        else:
            self.message_list.children = (self._empty_hint,)

    def send(self, text: str) -> dict[str, Any] | None:
        """Send ``text`` as the person would; return the reply, or None (error shown)."""
        if not text.strip():
            return None
        if not self.logged_in:
            self.show_notice("Log in first.", error=True)
            return None

        def action() -> dict[str, Any]:
            self.input.value = ""
            self._append({"role": "user", "content": text})
            delivered = False  # once the server answers, it has stored the message
            try:
                if self.conversation_id is None:
                    first_line = text.strip().splitlines()[0]
                    conv = self.client.new_conversation(first_line[:60])
                    self.conversation_id = conv["id"]
                    self._fill_picker([conv, *self._entries()], conv["id"])
                if self.stream:
                    stream = self.client.stream(self.conversation_id, text)
                    delivered = True
                    return self._receive(stream)
                return self._settle(self.client.send(self.conversation_id, text)["reply"])
            except (ApiError, TransportError) as e:
                if delivered or (isinstance(e, ApiError) and 500 <= e.status < 600):
                    # Stored before the backend failed: ask again rather than send it twice.
                    self.retry_button.layout.display = None
                else:
                    # Not stored: the text goes back into the input, ready to send again.
                    self._drop_last()
                    self.input.value = text
                raise

        return self._run(action, thinking=True)

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
                    self.retry_button.layout.display = None
                raise

        return self._run(action, thinking=True)

    def _settle(self, reply: dict[str, Any]) -> dict[str, Any]:
        self._append(reply)
        return dict(reply)

    def _receive(self, stream: ReplyStream) -> dict[str, Any]:
        """Show a reply while it streams in; return it once stored."""
        shown, drawn = False, 0.0
        with stream:
            try:
                for _chunk in stream:
                    partial = {"role": "assistant", "content": stream.text}
                    if not shown:
                        self.thinking.layout.display = "none"
                        self._append(partial)
                        shown, drawn = True, time.monotonic()
                    elif time.monotonic() - drawn >= self.refresh_interval:
                        self._replace_last(partial)
                        drawn = time.monotonic()
            except (ApiError, TransportError):
                # What arrived stays on screen, marked: the server kept it marked too.
                if stream.text:
                    cut = {"role": "assistant", "content": stream.text, "incomplete": True}
                    self._replace_last(cut) if shown else self._append(cut)
                raise
        reply = dict(stream.message or {"role": "assistant", "content": stream.text})
        self._replace_last(reply) if shown else self._append(reply)
        return reply

    def transcript(self) -> str:
        """The shown conversation as plain text, one ``role: content`` line per message."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

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
        for bubble in self._bubbles:
            bubble.value = ""
        self._fill_picker([], None)
        self._hide_confirm()
        self.input.value = ""
        for widget in self._widgets():
            widget.close()
        self._bubbles = []
        self.messages = []

    def __repr__(self) -> str:
        who = self.client.username if self.logged_in else "not logged in"
        return f"<ChatBox {self.client.base_url} ({who})>"
