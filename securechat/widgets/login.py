"""The login / register panel: a username, a masked password, *Log in* and *Register*."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w


class LoginForm:
    """The panel shown while logged out (:attr:`view`).

    A click hands ``(username, password, register)`` to ``submit``; the password field is
    emptied first, so the password does not linger in the widget state (saved notebooks
    can keep it).
    """

    def __init__(self, submit: Callable[[str, str, bool], None]) -> None:
        self._submit = submit
        self.username = w.Text(description="Username", placeholder="3-32 of A-Z a-z 0-9 _ . -")
        self.password = w.Password(description="Password", placeholder="at least 8 characters")
        self.login_button = w.Button(description="Log in", button_style="primary")
        self.register_button = w.Button(description="Register")
        self._buttons = w.HBox([self.login_button, self.register_button])
        self._title = w.HTML("<b>Log in or create an account</b>")
        self.view = w.VBox([self._title, self.username, self.password, self._buttons])
        self.login_button.on_click(lambda _b: self._submit_fields(register=False))
        self.register_button.on_click(lambda _b: self._submit_fields(register=True))

    def _submit_fields(self, register: bool) -> None:
        username, password = self.username.value, self.password.value
        self.password.value = ""
        self._submit(username, password, register)

    def set_busy(self, busy: bool) -> None:
        """Disable the fields and buttons while an action runs."""
        for widget in (self.login_button, self.register_button, self.username, self.password):
            widget.disabled = busy

    def widgets(self) -> list[w.Widget]:
        """Every widget of the panel, for closing."""
        return [self.username, self.password, self.login_button, self.register_button,
                self._title, self._buttons, self.view]
