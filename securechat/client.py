"""A ``requests`` client for the securechat HTTP API."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from .errors import ApiError

CSRF_HEADER = "X-CSRF-Token"


class ChatClient:
    """One long-lived HTTP session against a securechat server; it keeps the CSRF token.

    Every failure raises :class:`securechat.ApiError` (a ``SecureChatError``) carrying
    the server's error ``code`` and ``message``; ``code`` is ``"unreachable"`` or
    ``"timeout"`` when the server could not be reached.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.csrf_token: str | None = None
        self.username: str | None = None

    # --- plumbing -----------------------------------------------------------------

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        """Send one API request; return the decoded JSON (None for 204)."""
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        try:
            response = self.http.request(method, self.base_url + path, json=json, params=params,
                                         headers=headers, timeout=self.timeout)
        except requests.Timeout as e:
            raise ApiError(0, "timeout", f"No answer from {self.base_url} in time.") from e
        except requests.ConnectionError as e:
            raise ApiError(0, "unreachable", f"Cannot reach {self.base_url}; is the "
                           "server running?") from e
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError as e:
            raise ApiError(response.status_code, "bad_response",
                           "The server did not answer JSON.") from e
        if not response.ok:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ApiError(response.status_code, str(error.get("code", "error")),
                           str(error.get("message", response.reason)))
        return data

    # --- account ------------------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers its health check."""
        return self.request("GET", "/api/health").get("status") == "ok"

    def register(self, username: str, password: str) -> dict[str, Any]:
        """Create an account."""
        return self.request("POST", "/api/register",
                            json={"username": username, "password": password})

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; the session cookie and CSRF token are kept for later calls."""
        data = self.request("POST", "/api/login",
                            json={"username": username, "password": password})
        self.csrf_token, self.username = data["csrf_token"], data["username"]
        return data

    def session(self) -> dict[str, Any]:
        """Who is logged in (refreshes the CSRF token)."""
        data = self.request("GET", "/api/session")
        self.csrf_token, self.username = data["csrf_token"], data["username"]
        return data

    def logout(self) -> None:
        """Log out; the server revokes the session."""
        try:
            self.request("POST", "/api/logout", json={})
        finally:
            self.csrf_token = self.username = None
            self.http.cookies.clear()

    # --- conversations --------------------------------------------------------------

    def conversations(self) -> list[dict[str, Any]]:
        """The user's conversations, newest first."""
        return self.request("GET", "/api/conversations")["conversations"]

    def new_conversation(self, title: str | None = None) -> dict[str, Any]:
        """Create a conversation (a default title when none is given)."""
        return self.request("POST", "/api/conversations",
                            json={} if title is None else {"title": title})

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        self.request("DELETE", f"/api/conversations/{_quote(conversation_id)}")

    def send(self, conversation_id: str, content: str) -> dict[str, Any]:
        """Send a message; return ``{"message": ..., "reply": ...}``."""
        return self.request("POST", f"/api/conversations/{_quote(conversation_id)}/messages",
                            json={"content": content})

    def history_page(self, conversation_id: str, limit: int = 50,
                     before: str | None = None) -> dict[str, Any]:
        """One page of messages: ``{"messages": [...], "next_before": ...}``."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return self.request("GET", f"/api/conversations/{_quote(conversation_id)}/messages",
                            params=params)

    def history(self, conversation_id: str, page_size: int = 200) -> list[dict[str, Any]]:
        """Every message of a conversation, oldest first (all pages)."""
        pages: list[list[dict[str, Any]]] = []
        before: str | None = None
        while True:
            page = self.history_page(conversation_id, limit=page_size, before=before)
            pages.append(page["messages"])
            before = page["next_before"]
            if before is None:
                break
        return [m for page in reversed(pages) for m in page]

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP session's connections."""
        self.http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self.username or "not logged in"
        return f"<ChatClient {self.base_url} ({who})>"


def _quote(segment: str) -> str:
    return quote(segment, safe="")
