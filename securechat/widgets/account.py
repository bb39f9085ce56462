"""Your data, your keys, in the ChatBox: the account panel and the recovery code shown once.

:class:`RecoveryCodeView` shows a new recovery code masked, with *Show* to reveal it and
*I saved it* to take it away. :class:`AccountPanel` changes the password, makes a new
recovery code, lists and revokes sessions, shows the security log, sets retention and
deletes the account. Every call goes through the box's ``run`` (UI disabled, errors shown
under the box); passwords typed into the panel are emptied as soon as they are read, so
they do not stay in the widget state a notebook may save.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ChatClient
from ..errors import SecureChatError
from ..recovery import RecoveryCode
from .conversations import Run

_AUTO = w.Layout(width="auto")
_TABLE = ('<table style="border-collapse:collapse;font-size:0.9em" role="table">'
          "<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
_CELL = '<td style="padding:1px 8px 1px 0">{}</td>'
_EVENT_NAMES = {
    "login": "logged in", "login_failed": "failed login", "logout": "logged out",
    "password_changed": "password changed", "recovery_code_regenerated": "new recovery code",
    "recovered": "recovered with the code", "session_revoked": "session revoked",
    "sessions_revoked": "other sessions revoked", "settings_changed": "settings changed",
    "import": "import", "export": "export",
}


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table of plain strings, every one escaped."""
    heads = "".join(f'<th style="text-align:left;padding-right:8px">{html.escape(h)}</th>'
                    for h in head)
    body = "".join("<tr>" + "".join(_CELL.format(html.escape(c)) for c in row) + "</tr>"
                   for row in rows)
    return _TABLE.format(head=heads, rows=body)


def _when(iso: str | None) -> str:
    """An ISO time as people read it: ``2026-11-30 15:03`` (UTC)."""
    return (iso or "")[:16].replace("T", " ")


def session_label(session: dict[str, Any]) -> str:
    """One session as a line: where it came from, when it started and was last seen."""
    where = session.get("label") or "unknown browser"
    if session.get("address"):
        where += f" at {session['address']}"
    mark = " (this session)" if session.get("current") else ""
    return (f"{where}{mark}: since {_when(session.get('created_at'))}, "
            f"last seen {_when(session.get('last_seen'))}")


def _refuse() -> None:
    raise SecureChatError("Type your username to confirm deleting the account.")


class RecoveryCodeView:
    """A recovery code shown once (:attr:`view`): masked until *Show*; *I saved it* ends it.

    The code reaches the browser only while revealed; hidden or dismissed, the widget holds
    its masked shape alone.
    """

    def __init__(self) -> None:
        self.code: RecoveryCode | None = None
        self.intro = w.HTML()
        self.text = w.HTML()
        self.reveal_button = w.ToggleButton(description="Show", icon="eye", layout=_AUTO,
                                            tooltip="Show or hide the recovery code")
        self.done_button = w.Button(description="I saved it", layout=_AUTO,
                                    tooltip="Hide the code; it is not shown again")
        self.view = w.VBox([self.intro, w.HBox([self.text, self.reveal_button,
                                                self.done_button],
                                               layout=w.Layout(align_items="center"))],
                           layout=w.Layout(display="none", padding="4px",
                                           border="1px solid var(--jp-warn-color1, #c80)"))
        self.reveal_button.observe(lambda _c: self._draw(), names="value")
        self.done_button.on_click(lambda _b: self.dismiss())

    def show(self, code: RecoveryCode, why: str) -> None:
        """Show ``code`` masked, with ``why`` it is new and what to do with it."""
        self.code = code
        self.intro.value = (f"<b>{html.escape(why)}</b> Write it down or keep it in a "
                            "password manager now: it is shown only this once, and it is the "
                            "only way back in if you forget your password.")
        self.reveal_button.value = False
        self._draw()
        self.view.layout.display = None

    @property
    def revealed(self) -> bool:
        """True while the code itself is on screen."""
        return self.code is not None and self.reveal_button.value

    def _draw(self) -> None:
        if self.code is None:
            self.text.value = ""
            return
        shown = self.code.reveal() if self.reveal_button.value else self.code.masked
        label = "Recovery code" if self.reveal_button.value else "Recovery code (hidden)"
        self.text.value = (f'<code aria-label="{label}" style="font-size:1.1em;'
                           f'letter-spacing:0.05em">{html.escape(shown)}</code>')
        self.reveal_button.description = "Hide" if self.reveal_button.value else "Show"

    def dismiss(self) -> None:
        """Take the code away (blanked in the widgets too)."""
        self.code = None
        self.reveal_button.value = False
        self.intro.value = self.text.value = ""
        self.view.layout.display = "none"

    def widgets(self) -> list[w.Widget]:
        """Every widget of the view, for closing."""
        return [self.intro, self.text, self.reveal_button, self.done_button,
                *self.view.children, self.view]


class AccountPanel:
    """The account panel (:attr:`view`), opened with the box's *Account* button.

    ``show_code`` displays a new recovery code; ``on_gone(notice)`` is called when this
    session has ended here (the account deleted, or this session revoked).
    """

    def __init__(self, client: ChatClient, run: Run,
                 show_code: Callable[[RecoveryCode, str], None],
                 on_gone: Callable[[str], None]) -> None:
        self.client, self._run, self._show_code, self._on_gone = client, run, show_code, on_gone
        self._next_events: str | None = None
        self._events: list[dict[str, Any]] = []
        self._revoke_buttons: list[w.Button] = []
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
        # Sessions
        self.sessions_box = w.VBox()
        self.refresh_sessions_button = w.Button(description="Refresh", layout=_AUTO,
                                                tooltip="List the sessions again")
        self.revoke_others_button = w.Button(description="Log out everywhere else",
                                             layout=_AUTO, button_style="warning")
        # Security log
        self.log = w.HTML()
        self.older_button = w.Button(description="Older events", layout=_AUTO)
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
            w.HBox([self.new_code_button]), w.HBox([self.refresh_sessions_button,
                                                     self.revoke_others_button]),
            w.HBox([self.retention, self.save_retention_button]),
            w.HBox([self.change_password_button]), w.HBox([self.older_button]),
            w.HBox([self.delete_account_button]),
        ]
        self.view = w.VBox([
            h[0], self.current_password, self.new_password, self._rows[3],
            h[1], self.code_password, self._rows[0],
            h[2], self.sessions_box, self._rows[1],
            h[3], self.log, self._rows[4],
            h[4], self._rows[2], self.retention_note,
            h[5], self.delete_password, self.delete_confirm, self._rows[5],
        ], layout=w.Layout(display="none", padding="6px", grid_gap="2px",
                           border="1px solid var(--jp-border-color2, #ddd)"))
        self.change_password_button.on_click(lambda _b: self._change_from_fields())
        self.new_code_button.on_click(lambda _b: self.new_recovery_code(
            self._take(self.code_password)))
        self.refresh_sessions_button.on_click(lambda _b: self.sessions())
        self.revoke_others_button.on_click(lambda _b: self.revoke_others())
        self.older_button.on_click(lambda _b: self.security_log(more=True))
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
            self._load_sessions()
            self._load_events(more=False)
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
                self._load_sessions()
                self._load_events(more=False)
            return code

        return self._run(action)

    def new_recovery_code(self, password: str) -> RecoveryCode | None:
        """Make a new recovery code (the old one stops working) and show it."""
        def action() -> RecoveryCode:
            code = RecoveryCode(self.client.new_recovery_code(password))
            self._show_code(code, "Your new recovery code; the previous one no longer works.")
            if self.is_open:
                self._load_events(more=False)
            return code

        return self._run(action)

    # --- sessions -----------------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]] | None:
        """List where this account is logged in (newest first) in the panel; return it."""
        return self._run(self._load_sessions)

    def _load_sessions(self) -> list[dict[str, Any]]:
        found = self.client.sessions()
        old, self._revoke_buttons = self._revoke_buttons, []
        rows = []
        for session in found:
            button = w.Button(description="Revoke", layout=_AUTO,
                              tooltip="End this session" if not session.get("current")
                              else "End this session (you are logged out here)")
            button.on_click(lambda _b, sid=session["id"]: self.revoke(sid))
            self._revoke_buttons.append(button)
            rows.append(w.HBox([w.HTML(html.escape(session_label(session))), button],
                               layout=w.Layout(align_items="center")))
        self._clear_rows()
        self.sessions_box.children = tuple(rows)
        for button in old:
            button.close()
        return found

    def _clear_rows(self) -> None:
        for row in self.sessions_box.children:
            row.children[0].value = ""
            row.children[0].close()
            row.close()
        self.sessions_box.children = ()

    def revoke(self, session_id: str) -> bool:
        """End one session; revoking this one logs this box out."""
        def action() -> bool:
            current = {s["id"]: s.get("current") for s in self.client.sessions()}
            self.client.revoke_session(session_id)
            if current.get(session_id):
                self._on_gone("This session was revoked; log in again.")
            else:
                self._load_sessions()
            return True

        return self._run(action) is True

    def revoke_others(self) -> bool:
        """End every session but this one."""
        def action() -> bool:
            self.client.revoke_other_sessions()
            self._load_sessions()
            return True

        return self._run(action) is True

    # --- security log and settings -----------------------------------------------------

    def security_log(self, more: bool = False) -> list[dict[str, Any]] | None:
        """Show the newest security events (``more``: the next older page too); return all shown."""
        return self._run(lambda: self._load_events(more))

    def _load_events(self, more: bool) -> list[dict[str, Any]]:
        if more and self._next_events is None:
            return list(self._events)
        page = self.client.events(limit=20, before=self._next_events if more else None)
        self._events = (self._events if more else []) + list(page["events"])
        self._next_events = page["next_before"]
        self.older_button.disabled = self._next_events is None
        self.log.value = _table(["when (UTC)", "what", "from"], [
            [_when(e.get("at")), _EVENT_NAMES.get(e["type"], e["type"]), e.get("address") or ""]
            for e in self._events])
        return list(self._events)

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
                       self.refresh_sessions_button, self.revoke_others_button,
                       self.save_retention_button, self.delete_account_button,
                       *self._revoke_buttons):
            button.disabled = busy
        self.older_button.disabled = busy or self._next_events is None

    def blank(self) -> None:
        """Empty what the panel shows (sessions, log, fields), before closing or on logout."""
        self._clear_rows()
        for button in self._revoke_buttons:
            button.close()
        self._revoke_buttons = []
        self._events, self._next_events = [], None
        self.log.value = self.retention_note.value = ""
        for field in (self.current_password, self.new_password, self.code_password,
                      self.delete_password, self.delete_confirm):
            field.value = ""
        self.hide()

    def widgets(self) -> list[w.Widget]:
        """Every widget of the panel, for closing."""
        return [self.current_password, self.new_password, self.change_password_button,
                self.code_password, self.new_code_button, self.sessions_box,
                self.refresh_sessions_button, self.revoke_others_button, self.log,
                self.older_button, self.retention, self.save_retention_button,
                self.retention_note, self.delete_password, self.delete_confirm,
                self.delete_account_button, *self._headings, *self._rows, self.view]
