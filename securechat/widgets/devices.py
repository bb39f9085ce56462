"""Where you are logged in and what happened, in the account panel: sessions and the log.

:class:`SessionList` lists this account's sessions, each with *Revoke*, and ends every
other one; :class:`SecurityLog` shows the security log a page at a time. Both show only
what the server returns, escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ChatClient
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


class SessionList:
    """The sessions (:attr:`box`, one row each with *Revoke*) and their buttons (:attr:`row`).

    ``on_gone(notice)`` is called when this box's own session was revoked.
    """

    def __init__(self, client: ChatClient, run: Run, on_gone: Callable[[str], None]) -> None:
        self.client, self._run, self._on_gone = client, run, on_gone
        self._revoke_buttons: list[w.Button] = []
        self.box = w.VBox()
        self.refresh_button = w.Button(description="Refresh", layout=_AUTO,
                                       tooltip="List the sessions again")
        self.revoke_others_button = w.Button(description="Log out everywhere else",
                                             layout=_AUTO, button_style="warning")
        # Buttons in a row of their own: directly in the column they would stretch across it.
        self.row = w.HBox([self.refresh_button, self.revoke_others_button])
        self.refresh_button.on_click(lambda _b: self.sessions())
        self.revoke_others_button.on_click(lambda _b: self.revoke_others())

    def sessions(self) -> list[dict[str, Any]] | None:
        """List where this account is logged in (newest first) in the panel; return it."""
        return self._run(self.load)

    def load(self) -> list[dict[str, Any]]:
        """Ask for the sessions and show them (inside an action already running)."""
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
        self.box.children = tuple(rows)
        for button in old:
            button.close()
        return found

    def _clear_rows(self) -> None:
        for row in self.box.children:
            row.children[0].value = ""
            row.children[0].close()
            row.close()
        self.box.children = ()

    def revoke(self, session_id: str) -> bool:
        """End one session; revoking this one logs this box out."""
        def action() -> bool:
            current = {s["id"]: s.get("current") for s in self.client.sessions()}
            self.client.revoke_session(session_id)
            if current.get(session_id):
                self._on_gone("This session was revoked; log in again.")
            else:
                self.load()
            return True

        return self._run(action) is True

    def revoke_others(self) -> bool:
        """End every session but this one."""
        def action() -> bool:
            self.client.revoke_other_sessions()
            self.load()
            return True

        return self._run(action) is True

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons while an action runs."""
        for button in (self.refresh_button, self.revoke_others_button, *self._revoke_buttons):
            button.disabled = busy

    def blank(self) -> None:
        """Take the sessions away (before closing, or on logout)."""
        self._clear_rows()
        for button in self._revoke_buttons:
            button.close()
        self._revoke_buttons = []

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.box, self.refresh_button, self.revoke_others_button, self.row]


class SecurityLog:
    """The security log (:attr:`log`, a table newest first) and *Older events* (:attr:`row`)."""

    def __init__(self, client: ChatClient, run: Run) -> None:
        self.client, self._run = client, run
        self._next_events: str | None = None
        self._events: list[dict[str, Any]] = []
        self.log = w.HTML()
        self.older_button = w.Button(description="Older events", layout=_AUTO)
        self.row = w.HBox([self.older_button])
        self.older_button.on_click(lambda _b: self.security_log(more=True))

    def security_log(self, more: bool = False) -> list[dict[str, Any]] | None:
        """Show the newest security events (``more``: the next older page too); return all shown."""
        return self._run(lambda: self.load(more))

    def load(self, more: bool) -> list[dict[str, Any]]:
        """Ask for a page of events and show them (inside an action already running)."""
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

    def set_busy(self, busy: bool) -> None:
        """Disable *Older events* while an action runs, or when there is nothing older."""
        self.older_button.disabled = busy or self._next_events is None

    def blank(self) -> None:
        """Take the events away (before closing, or on logout)."""
        self._events, self._next_events = [], None
        self.log.value = ""

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.log, self.older_button, self.row]
