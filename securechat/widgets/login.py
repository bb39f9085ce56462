"""The login / register panel: a username, a masked password, *Log in* and *Register*,
and *Forgot password?*: a recovery code and a new password."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w


class LoginForm:
    """The panel shown while logged out (:attr:`view`).

    A click hands ``(username, password, register)`` to ``submit``, and *Set new password*
    hands ``(username, recovery_code, new_password)`` to ``recover``; the secret fields are
    emptied first, so nothing typed lingers in the widget state (saved notebooks can keep it).
    """

    def __init__(self, submit: Callable[[str, str, bool], None],
                 recover: Callable[[str, str, str], None]) -> None:
        self._submit, self._recover = submit, recover
        self.username = w.Text(description="Username", placeholder="3-32 of A-Z a-z 0-9 _ . -")
        self.password = w.Password(description="Password", placeholder="at least 8 characters")
        self.login_button = w.Button(description="Log in", button_style="primary")
        self.register_button = w.Button(description="Register")
        self.forgot_button = w.ToggleButton(description="Forgot password?",
                                            tooltip="Set a new password with your recovery code")
        self._buttons = w.HBox([self.login_button, self.register_button, self.forgot_button])
        self._title = w.HTML("<b>Log in or create an account</b>")
        # The recovery code is typed into a masked field: it is a secret like a password.
        self.recovery_code = w.Password(description="Recovery code",
                                        placeholder="XXXX-XXXX-…-XXX")
        self.new_password = w.Password(description="New password",
                                       placeholder="8 characters or more")
        self.recover_button = w.Button(description="Set new password", button_style="warning")
        self.recover_row = w.VBox(
            [w.HTML("Your recovery code sets a new password; your history stays."),
             self.recovery_code, self.new_password, self.recover_button],
            layout=w.Layout(display="none"))
        self.view = w.VBox([self._title, self.username, self.password, self._buttons,
                            self.recover_row])
        self.login_button.on_click(lambda _b: self._submit_fields(register=False))
        self.register_button.on_click(lambda _b: self._submit_fields(register=True))
        self.forgot_button.observe(self._toggle_recover, names="value")
        self.recover_button.on_click(lambda _b: self._recover_fields())

    def _submit_fields(self, register: bool) -> None:
        username, password = self.username.value, self.password.value
        self.password.value = ""
        self._submit(username, password, register)

    def _toggle_recover(self, change: dict[str, object]) -> None:
        self.recover_row.layout.display = None if change["new"] else "none"
        if not change["new"]:
            self.recovery_code.value = self.new_password.value = ""

    def _recover_fields(self) -> None:
        username, code, new = (self.username.value, self.recovery_code.value,
                               self.new_password.value)
        self.recovery_code.value = self.new_password.value = ""
        self._recover(username, code, new)

    def reset(self) -> None:
        """Close the recovery row and empty the secret fields."""
        self.forgot_button.value = False
        self.password.value = self.recovery_code.value = self.new_password.value = ""

    def set_busy(self, busy: bool) -> None:
        """Disable the fields and buttons while an action runs."""
        for widget in (self.login_button, self.register_button, self.username, self.password,
                       self.forgot_button, self.recovery_code, self.new_password,
                       self.recover_button):
            widget.disabled = busy

    def widgets(self) -> list[w.Widget]:
        """Every widget of the panel, for closing."""
        return [self.username, self.password, self.login_button, self.register_button,
                self.forgot_button, self._title, self._buttons, self.recovery_code,
                self.new_password, self.recover_button, *self.recover_row.children,
                self.recover_row, self.view]
