"""ChatClient's account methods: password, recovery code, sessions, security log, settings."""

from __future__ import annotations

from typing import Any

from .client_http import ClientBase, _quote


class AccountMethods(ClientBase):
    """Your data, your keys: what :class:`securechat.ChatClient` does with the account."""

    def change_password(self, current_password: str, new_password: str) -> str:
        """Set a new password; return the new recovery code (the old one no longer works).

        Every other session ends; this one stays.
        """
        data = self.request("POST", "/api/account/password", json={
            "current_password": current_password, "new_password": new_password})
        return str(data["recovery_code"])

    def recover(self, username: str, recovery_code: str, new_password: str) -> str:
        """Set a new password with a recovery code and log in; return the next code."""
        data = self.request("POST", "/api/account/recover", json={
            "username": username, "recovery_code": recovery_code,
            "new_password": new_password})
        self.csrf_token, self.username = data["csrf_token"], data["username"]
        return str(data["recovery_code"])

    def new_recovery_code(self, password: str) -> str:
        """A new recovery code (the previous one stops working)."""
        return str(self.request("POST", "/api/account/recovery-code",
                                json={"password": password})["recovery_code"])

    def sessions(self) -> list[dict[str, Any]]:
        """Where this account is logged in, newest first (``current`` marks this one)."""
        return list(self.request("GET", "/api/account/sessions")["sessions"])

    def revoke_session(self, session_id: str) -> None:
        """End one session, wherever it is."""
        self.request("DELETE", f"/api/account/sessions/{_quote(session_id)}")

    def revoke_other_sessions(self) -> None:
        """End every session but this one."""
        self.request("DELETE", "/api/account/sessions")

    def events(self, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """One page of the security log, newest first: ``{"events", "next_before"}``."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return self.request("GET", "/api/account/events", params=params)

    def settings(self) -> dict[str, Any]:
        """The account's settings, e.g. ``{"retention_days": None}``."""
        return self.request("GET", "/api/account/settings")

    def update_settings(self, **settings: Any) -> dict[str, Any]:
        """Change settings, e.g. ``retention_days=30`` (None: keep forever)."""
        return self.request("PATCH", "/api/account/settings", json=settings)

    def delete_account(self, password: str) -> None:
        """Delete the account and everything in it, for good.

        A wrong password (``invalid_credentials``) deletes nothing and keeps the session.
        """
        self.request("DELETE", "/api/account", json={"password": password})
        self.csrf_token = self.username = None
        self.http.cookies.clear()
