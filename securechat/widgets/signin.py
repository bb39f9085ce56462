"""Getting in and out: log in, register, recover with the recovery code, log out.

What the login panel's buttons (:class:`LoginForm`) and *Log out* do. Every call to the
server goes through the box's ``run``; the box itself switches between its panels
(``enter`` and ``leave``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..client import ChatClient
from ..recovery import RecoveryCode
from .conversations import Run
from .login import LoginForm


class SignIn:
    """The login panel (:attr:`form`) and what it does.

    ``enter()`` shows the chat of the client's session; ``leave(notice, error)`` goes back
    to the login panel; ``show_code(code, why)`` shows a new recovery code once; ``focus()``
    puts the cursor in the message box after what a person clicked (never after code).
    """

    def __init__(self, client: ChatClient, run: Run, enter: Callable[[], None],
                 leave: Callable[[str, bool], None],
                 show_code: Callable[[RecoveryCode, str], None],
                 focus: Callable[[], None]) -> None:
        self.client, self._run, self._enter, self._leave = client, run, enter, leave
        self._show_code, self._focus = show_code, focus
        self.form = LoginForm(submit=self._from_fields, recover=self._recover_from_fields)

    def login(self, username: str, password: str) -> bool:
        """Log in and switch to the chat; False (with the reason shown) when it failed."""
        def action() -> bool:
            self.client.login(username, password)  # 401 "wrong username or password" is shown
            self._enter()
            return True

        return bool(self._run(action))

    def register(self, username: str, password: str) -> bool:
        """Create an account, then log in; False (with the reason shown) when it failed.

        The recovery code the server makes is shown once, masked.
        """
        created = self._run(lambda: self.client.register(username, password))
        if not created:
            return False
        entered = self.login(username, password)
        if entered:
            self._show_code(RecoveryCode(created["recovery_code"]),
                            "Account created. This is your recovery code.")
        return entered

    def recover(self, username: str, recovery_code: str, new_password: str) -> bool:
        """Set a new password with the recovery code and log in; the next code is shown."""
        def action() -> bool:
            code = RecoveryCode(self.client.recover(username, recovery_code, new_password))
            self._enter()
            self._show_code(code, "Password set; your history is all here. The code you "
                                  "used is spent: this is your new recovery code.")
            return True

        return self._run(action) is True

    def logout(self) -> None:
        """Log out (the server revokes the session) and show the login panel."""
        def action() -> None:
            try:
                self.client.logout()
            finally:
                # Even when the server is unreachable, this box forgets the session.
                self._leave("Logged out.", False)

        self._run(action)

    def _from_fields(self, username: str, password: str, register: bool) -> None:
        entered = self.register(username, password) if register else self.login(username, password)
        if entered:
            self._focus()  # ready to type the first message

    def _recover_from_fields(self, username: str, recovery_code: str, new_password: str) -> None:
        if self.recover(username, recovery_code, new_password):
            self._focus()
