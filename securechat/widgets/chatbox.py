"""ChatBox: log in, pick a conversation, chat, in a notebook. Nothing typed runs as code.

Every message reaches the browser through :func:`message_html`: escaped with
:func:`html.escape`, or (an assistant's reply) parsed by :func:`render_markdown` into
attribute-free tags over escaped text, so no HTML from a message can survive.

:class:`ChatBox` is what a person and a notebook use: each of its methods hands the work to
the component that does it (laid out, and each action run, by its :class:`ChatFrame`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..recovery import RecoveryCode
from .frame import ChatFrame


class ChatBox(ChatFrame):
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

    @property
    def conversation_id(self) -> str | None:
        """The id of the conversation shown (None for a new one, not created yet)."""
        return self.chats.current

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages shown, oldest first."""
        return self.bubbles.messages

    @property
    def temporary(self) -> bool:
        """True during a temporary chat: stored nowhere, the history is the box's."""
        return self.temporary_chat.on

    @property
    def stream(self) -> bool:
        """Whether replies are shown as they are generated (Server-Sent Events)."""
        return self.replies.stream

    @stream.setter
    def stream(self, on: bool) -> None:
        self.replies.stream = on

    @property
    def refresh_interval(self) -> float:
        """Seconds between two redraws of a reply streaming in (each sends the whole bubble)."""
        return self.replies.refresh_interval

    @refresh_interval.setter
    def refresh_interval(self, seconds: float) -> None:
        self.replies.refresh_interval = seconds

    @property
    def ghost_window(self) -> int:
        """How many messages a temporary chat sends as its history."""
        return self.replies.ghost_window

    @ghost_window.setter
    def ghost_window(self, count: int) -> None:
        self.replies.ghost_window = count

    # --- getting in and out (the SignIn component) --------------------------------------

    def login(self, username: str, password: str) -> bool:
        """Log in and switch to the chat; False (with the reason shown) when it failed."""
        return self.signin.login(username, password)

    def register(self, username: str, password: str) -> bool:
        """Create an account, then log in; False (with the reason shown) when it failed.

        The recovery code the server makes is shown once, masked (:attr:`recovery_code`).
        """
        return self.signin.register(username, password)

    @property
    def recovery_code(self) -> RecoveryCode | None:
        """The recovery code on show (masked when printed), None once *I saved it* is pressed."""
        return self.code_view.code

    def recover(self, username: str, recovery_code: str, new_password: str) -> bool:
        """Set a new password with the recovery code and log in; the next code is shown."""
        return self.signin.recover(username, recovery_code, new_password)

    def logout(self) -> None:
        """Log out (the server revokes the session) and show the login panel."""
        self.signin.logout()

    # --- the account panel (the AccountPanel component) ----------------------------------

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

    # --- conversations (the Conversations component) ------------------------------------

    def conversations(self) -> list[tuple[str, str]]:
        """The picker's entries as (title, id), newest first."""
        return self.chats.options()

    def new_conversation(self, title: str | None = None) -> str | None:
        """Create a conversation now and switch to it; return its id (None on failure)."""
        return self.chats.create(title)

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

    # --- messages: the send path (the Replies component) --------------------------------

    def send(self, text: str) -> dict[str, Any] | None:
        """Send ``text`` as the person would; return the reply, or None (error shown)."""
        return self.replies.send(text)

    def set_temporary(self, on: bool = True) -> None:
        """Start (or end) a temporary chat: nothing is stored, the box holds its history.

        Ending it forgets that chat and shows the stored conversations again.
        """
        self.temporary_chat.set(on)

    def regenerate(self) -> dict[str, Any] | None:
        """Replace the last reply with a new answer (the old one goes once the new one exists)."""
        return self.replies.regenerate()

    def ask_edit(self) -> None:
        """What *Edit last message* does: put your last message in the box to change it."""
        self.replies.ask_edit()

    def cancel_edit(self) -> None:
        """Leave editing: the next message is sent as a new one."""
        self.replies.cancel_edit()

    def edit_last(self, text: str) -> dict[str, Any] | None:
        """Replace your last message with ``text`` (what followed goes); return the new reply."""
        return self.replies.edit_last(text)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a reply asked for from the browser; False if it is still coming."""
        return self.replies.wait(timeout)

    def stop(self) -> None:
        """Stop the reply streaming in (Esc, *Stop*): what arrived stays, marked cut short."""
        self.replies.stop()

    def retry(self) -> dict[str, Any] | None:
        """Ask again for the reply a failed server or AI backend left missing."""
        return self.replies.retry()

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

    def copy(self, index: int = -1) -> str:
        """Put a message (default: the newest) on the clipboard, as *Copy* does; return it."""
        return self.bubbles.copy(index)

    def copy_code(self, index: int = -1, block: int = 0) -> str:
        """Put one code block of a message on the clipboard, as *Copy code* does; return it."""
        return self.bubbles.copy_code(index, block)

    def transcript(self) -> str:
        """The shown conversation as plain text, one ``role: content`` line per message."""
        return self.bubbles.transcript()
