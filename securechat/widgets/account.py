"""Your data, your keys, in the ChatBox: the account panel.

:class:`AccountPanel` changes the password, makes a new recovery code (shown by the box's
:class:`~.recovery_code.RecoveryCodeView`), lists and revokes sessions and shows the
security log (its :class:`~.devices.SessionList` and :class:`~.devices.SecurityLog`), sets
retention and deletes the account. Every call goes through the box's ``run`` (UI disabled,
errors shown under the box); passwords typed into the panel are emptied as soon as they
are read, so they do not stay in the widget state a notebook may save.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ChatClient
from ..errors import SecureChatError
from ..recovery import RecoveryCode
from .conversations import Run
from .devices import SecurityLog, SessionList

_AUTO = w.Layout(width="auto")


def _refuse() -> None:
    raise SecureChatError("Type your username to confirm deleting the account.")


class AccountPanel:
    """The account panel (:attr:`view`), opened with the box's *Account* button.

    ``show_code`` displays a new recovery code; ``on_gone(notice)`` is called when this
    session has ended here (the account deleted, or this session revoked).
    """

    def __init__(self, client: ChatClient, run: Run,
                 show_code: Callable[[RecoveryCode, str], None],
                 on_gone: Callable[[str], None]) -> None:
        self.client, self._run, self._show_code, self._on_gone = client, run, show_code, on_gone
        self.session_list = SessionList(client, run, on_gone)
        self.event_log = SecurityLog(client, run)
        pw = "Current password"
        # Password
        self.current_password = w.Password(description=pw, style={"description_width": "10em"})
        self.new_password = w.Password(description="New password",
                                       style={"description_width": "10em"},
                                       placeholder="8 characters or more")
        self.change_password_button = w.Button(description="Change password", layout=_AUTO)
        # Recovery code
        self.code_password = w.Password(description=pw, style={"description_width": "10em"})
        self.new_code_button = w.Button(description="New recovery code", layout=_AUTO,
                                        tooltip="The current code stops working")
        # Sessions and the security log: their components' widgets, by the names tests use.
        self.sessions_box = self.session_list.box
        self.refresh_sessions_button = self.session_list.refresh_button
        self.revoke_others_button = self.session_list.revoke_others_button
        self.log, self.older_button = self.event_log.log, self.event_log.older_button
        # Retention
        self.retention = w.BoundedIntText(value=0, min=0, max=3650, layout=w.Layout(width="16em"),
                                          description="Delete after (days)",
                                          style={"description_width": "10em"},
                                          tooltip="0 keeps everything; starred chats are kept")
        self.save_retention_button = w.Button(description="Save", layout=_AUTO)
        self.retention_note = w.HTML()
        # Deletion
        self.delete_password = w.Password(description=pw, style={"description_width": "10em"})
        self.delete_confirm = w.Text(description="Type username", placeholder="to confirm",
                                     style={"description_width": "10em"})
        self.delete_account_button = w.Button(description="Delete account", layout=_AUTO,
                                              button_style="danger")
        self._headings = [w.HTML(f"<b>{h}</b>") for h in (
            "Password", "Recovery code", "Where you are logged in", "Security log",
            "Keep conversations", "Delete account")]
        h = self._headings
        # Buttons in rows of their own: directly in the column they would stretch across it.
        self._rows = [
            w.HBox([self.new_code_button]),
            w.HBox([self.retention, self.save_retention_button]),
            w.HBox([self.change_password_button]),
            w.HBox([self.delete_account_button]),
        ]
        self.view = w.VBox([
            h[0], self.current_password, self.new_password, self._rows[2],
            h[1], self.code_password, self._rows[0],
            h[2], self.sessions_box, self.session_list.row,
            h[3], self.log, self.event_log.row,
            h[4], self._rows[1], self.retention_note,
            h[5], self.delete_password, self.delete_confirm, self._rows[3],
        ], layout=w.Layout(display="none", padding="6px", grid_gap="2px",
                           border="1px solid var(--jp-border-color2, #ddd)"))
        self.change_password_button.on_click(lambda _b: self._change_from_fields())
        self.new_code_button.on_click(lambda _b: self.new_recovery_code(
            self._take(self.code_password)))
        self.save_retention_button.on_click(
            lambda _b: self.set_retention(self.retention.value or None))
        self.delete_account_button.on_click(lambda _b: self._delete_from_fields())

    @staticmethod
    def _take(field: w.Password | w.Text) -> str:
        """A field's value, emptied at once (typed secrets must not stay in widget state)."""
        value = str(field.value)
        field.value = ""
        return value

    # --- opening ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the panel is shown."""
        return self.view.layout.display is None

    def open(self) -> bool:
        """Show the panel with fresh sessions, security log and settings."""
        def action() -> bool:
            self.session_list.load()
            self.event_log.load(more=False)
            self._show_settings(self.client.settings())
            self.view.layout.display = None
            return True

        return self._run(action) is True

    def hide(self) -> None:
        """Hide the panel."""
        self.view.layout.display = "none"

    # --- password and recovery code ---------------------------------------------------

    def _change_from_fields(self) -> None:
        self.change_password(self._take(self.current_password), self._take(self.new_password))

    def change_password(self, current: str, new: str) -> RecoveryCode | None:
        """Set a new password; every other session ends; the new recovery code is shown."""
        def action() -> RecoveryCode:
            code = RecoveryCode(self.client.change_password(current, new))
            self._show_code(code, "Password changed; your other sessions were logged out. "
                                  "Your recovery code changed too.")
            if self.is_open:
                self.session_list.load()
                self.event_log.load(more=False)
            return code

        return self._run(action)

    def new_recovery_code(self, password: str) -> RecoveryCode | None:
        """Make a new recovery code (the old one stops working) and show it."""
        def action() -> RecoveryCode:
            code = RecoveryCode(self.client.new_recovery_code(password))
            self._show_code(code, "Your new recovery code; the previous one no longer works.")
            if self.is_open:
                self.event_log.load(more=False)
            return code

        return self._run(action)

    # --- sessions and security log (the SessionList and SecurityLog components) ---------

    def sessions(self) -> list[dict[str, Any]] | None:
        """List where this account is logged in (newest first) in the panel; return it."""
        return self.session_list.sessions()

    def revoke(self, session_id: str) -> bool:
        """End one session; revoking this one logs this box out."""
        return self.session_list.revoke(session_id)

    def revoke_others(self) -> bool:
        """End every session but this one."""
        return self.session_list.revoke_others()

    def security_log(self, more: bool = False) -> list[dict[str, Any]] | None:
        """Show the newest security events (``more``: the next older page too); return all shown."""
        return self.event_log.security_log(more)

    # --- settings ---------------------------------------------------------------------

    def set_retention(self, days: int | None) -> bool:
        """Delete unstarred conversations idle for ``days`` (None: keep everything)."""
        def action() -> bool:
            self._show_settings(self.client.update_settings(retention_days=days))
            return True

        return self._run(action) is True

    def _show_settings(self, settings: dict[str, Any]) -> None:
        days = settings.get("retention_days")
        self.retention.value = days or 0
        self.retention_note.value = (
            "Conversations are kept until you delete them." if days is None else
            f"Unstarred conversations idle for {days} days are deleted.")

    # --- deletion ---------------------------------------------------------------------

    def _delete_from_fields(self) -> None:
        password, typed = self._take(self.delete_password), self._take(self.delete_confirm)
        if typed != self.client.username:
            self._run(_refuse)
            return
        self.delete_account(password)

    def delete_account(self, password: str) -> bool:
        """Delete the account and everything in it, for good; this box returns to the login."""
        def action() -> bool:
            self.client.delete_account(password)
            self._on_gone("Your account and everything in it were deleted.")
            return True

        return self._run(action) is True

    # --- the box's lifetime -------------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons while an action runs."""
        for button in (self.change_password_button, self.new_code_button,
                       self.save_retention_button, self.delete_account_button):
            button.disabled = busy
        self.session_list.set_busy(busy)
        self.event_log.set_busy(busy)

    def blank(self) -> None:
        """Empty what the panel shows (sessions, log, fields), before closing or on logout."""
        self.session_list.blank()
        self.event_log.blank()
        self.retention_note.value = ""
        for field in (self.current_password, self.new_password, self.code_password,
                      self.delete_password, self.delete_confirm):
            field.value = ""
        self.hide()

    def widgets(self) -> list[w.Widget]:
        """Every widget of the panel, for closing."""
        return [self.current_password, self.new_password, self.change_password_button,
                self.code_password, self.new_code_button, *self.session_list.widgets(),
                *self.event_log.widgets(), self.retention, self.save_retention_button,
                self.retention_note, self.delete_password, self.delete_confirm,
                self.delete_account_button, *self._headings, *self._rows, self.view]
