"""A ``requests`` client for the securechat HTTP API."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .client_account import AccountMethods
from .client_http import ReplyStream, _quote, retry_after
from .client_portable import PortableMethods

__all__ = ["ChatClient", "ReplyStream", "retry_after"]


class ChatClient(AccountMethods, PortableMethods):
    """One long-lived HTTP session against a securechat server; it keeps the CSRF token.

    An error the server answers raises :class:`securechat.ApiError` (its ``status``,
    ``code`` and ``message``); no usable answer at all (unreachable, timed out, broken)
    raises :class:`securechat.TransportError`. Both are ``SecureChatError``.
    """

    # --- logging in -----------------------------------------------------------------

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

    def conversations_page(self, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """One page of conversations: ``{"conversations": [...], "next_before": ...}``."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return self.request("GET", "/api/conversations", params=params)

    def conversations(self, page_size: int = 200) -> list[dict[str, Any]]:
        """All the user's conversations (every page): starred first, then latest activity."""
        found: list[dict[str, Any]] = []
        before: str | None = None
        while True:
            page = self.conversations_page(page_size, before)
            found += page["conversations"]
            before = page["next_before"]
            if before is None:
                return found

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

    def stream(self, conversation_id: str, content: str) -> ReplyStream:
        """Send a message and receive the reply as it is generated (Server-Sent Events).

        Iterate the returned :class:`ReplyStream` for text chunks; afterwards its
        ``message`` is the stored reply. Errors before the stream starts (400, 404, ...)
        raise :class:`ApiError` here, a backend failure mid-reply raises it while iterating.
        """
        return self._stream(f"/api/conversations/{_quote(conversation_id)}/messages",
                            {"content": content})

    def retry(self, conversation_id: str) -> dict[str, Any]:
        """Ask again for the reply a backend failure left missing; return ``{"reply": ...}``.

        ``ApiError`` with code ``nothing_to_answer`` (409) when the last message has its reply.
        """
        return self.request("POST", f"/api/conversations/{_quote(conversation_id)}/reply",
                            json={})

    def update_conversation(self, conversation_id: str, title: str | None = None,
                            starred: bool | None = None) -> dict[str, Any]:
        """Rename and/or star a conversation; return it (its ``updated_at`` stays)."""
        body: dict[str, Any] = {}
        if title is not None:
            body["title"] = title
        if starred is not None:
            body["starred"] = starred
        return self.request("PATCH", f"/api/conversations/{_quote(conversation_id)}",
                            json=body)

    def regenerate(self, conversation_id: str) -> dict[str, Any]:
        """Replace the last reply with a new one; return ``{"reply": ...}``."""
        return self.request("POST", f"/api/conversations/{_quote(conversation_id)}/reply",
                            json={"regenerate": True})

    def regenerate_stream(self, conversation_id: str) -> ReplyStream:
        """Replace the last reply with a new one, streamed as it is generated."""
        return self._stream(f"/api/conversations/{_quote(conversation_id)}/reply",
                            {"regenerate": True})

    def edit_last(self, conversation_id: str, message_id: str,
                  content: str) -> dict[str, Any]:
        """Edit the last user message (what followed it goes); ``{"message", "reply"}``."""
        return self.request(
            "PUT", f"/api/conversations/{_quote(conversation_id)}/messages/{_quote(message_id)}",
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
