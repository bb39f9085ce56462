"""A ``requests`` client for the securechat HTTP API."""

from __future__ import annotations

import base64
import json as jsonlib
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from . import protocol
from .errors import ApiError, TransportError
from .protocol import CSRF_HEADER


class ChatClient:
    """One long-lived HTTP session against a securechat server; it keeps the CSRF token.

    An error the server answers raises :class:`securechat.ApiError` (its ``status``,
    ``code`` and ``message``); no usable answer at all (unreachable, timed out, broken)
    raises :class:`securechat.TransportError`. Both are ``SecureChatError``.
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
        return _decoded(self._http(method, path, json=json, params=params, headers=headers))

    def _http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP exchange with a timeout; transport failures become ApiError."""
        try:
            return self.http.request(method, self.base_url + path, timeout=self.timeout,
                                     **kwargs)
        except requests.Timeout as e:
            raise TransportError("timeout", f"No answer from {self.base_url} in time.") from e
        except requests.ConnectionError as e:
            raise TransportError("unreachable", f"Cannot reach {self.base_url}; is the "
                           "server running?") from e
        except requests.RequestException as e:
            # A malformed URL, a broken chunked answer, ...: still the package's error.
            raise TransportError("request_failed", f"The request to {self.base_url} failed: "
                           f"{type(e).__name__}.") from e

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

    # --- your data, your keys ---------------------------------------------------------

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

    def ghost(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """A reply to a history kept here, stored nowhere: ``{"reply": ...}``."""
        return self.request("POST", "/api/ghost", json={"messages": messages})

    def ghost_stream(self, messages: list[dict[str, str]]) -> ReplyStream:
        """A reply to a history kept here, stored nowhere, streamed as it is generated."""
        return self._stream("/api/ghost", {"messages": messages})

    # --- your history, portable -------------------------------------------------------

    def iter_export(self, format: str = "json") -> Iterator[bytes]:
        """The whole history (``json`` or ``markdown``), as bytes while they arrive.

        Plaintext: whoever reads what this yields reads every conversation. A stream cut
        short raises :class:`TransportError` (``stream_broken``) at its end.
        """
        return self._download("GET", "/api/export", params={"format": format},
                              ending=_EXPORT_ENDINGS[format] if format in _EXPORT_ENDINGS
                              else b"")

    def export(self, path: str | os.PathLike[str], format: str = "json") -> Path:
        """Write the whole history (``json`` or ``markdown``) to ``path``; return it.

        Written to ``<path>.part`` first (owner-only) and renamed once whole, so a failed
        export leaves no file that looks complete. The file is plaintext: keep it safe.
        """
        return _write_atomically(Path(path), self.iter_export(format))

    def export_archive(self, path: str | os.PathLike[str], passphrase: str) -> Path:
        """Write the history sealed under ``passphrase`` (the encrypted archive) to ``path``."""
        chunks = self._download("POST", "/api/export/archive",
                                json={"passphrase": passphrase}, ending=b"")
        return _write_atomically(Path(path), chunks)

    def import_export(self, source: str | os.PathLike[str] | bytes | dict[str, Any],
                      passphrase: str | None = None) -> dict[str, int]:
        """Import an export (a file, its bytes or its JSON) or, with ``passphrase``, an archive.

        Returns ``{"imported": conversations, "messages": messages}``; the conversations
        are new ones of this account.
        """
        if isinstance(source, dict):
            data = jsonlib.dumps(source).encode("utf-8")
        elif isinstance(source, bytes):
            data = source
        else:
            data = Path(source).read_bytes()
        if passphrase is not None:
            data = jsonlib.dumps({"archive": base64.b64encode(data).decode("ascii"),
                                  "passphrase": passphrase}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.csrf_token:
            headers[CSRF_HEADER] = self.csrf_token
        return dict(_decoded(self._http("POST", "/api/import", data=data, headers=headers)))

    def search(self, q: str, limit: int = 20, before: str | None = None) -> dict[str, Any]:
        """One page of titles and messages holding ``q``: ``{"results", "next_before"}``."""
        body: dict[str, Any] = {"q": q, "limit": limit}
        if before is not None:
            body["before"] = before
        return self.request("POST", "/api/search", json=body)

    def _download(self, method: str, path: str, ending: bytes,
                  **kwargs: Any) -> Iterator[bytes]:
        """A streamed download's bytes; errors before it starts raise here, at once."""
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        response = self._http(method, path, headers=headers, stream=True, **kwargs)
        if not response.ok:
            with response:
                _decoded(response)
        return _body(response, ending)

    def _stream(self, path: str, body: Any) -> ReplyStream:
        headers = {"Accept": protocol.CONTENT_TYPE}
        if self.csrf_token:
            headers[CSRF_HEADER] = self.csrf_token
        response = self._http("POST", path, json=body, headers=headers, stream=True)
        if not response.headers.get("Content-Type", "").startswith(protocol.CONTENT_TYPE):
            with response:
                _decoded(response)  # raises the server's ApiError
                raise TransportError("bad_response",
                                     "The server did not answer with an event stream.")
        return ReplyStream(response)

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


class ReplyStream:
    """A reply arriving as Server-Sent Events; iterate it for the text chunks.

    After the last chunk, ``message`` is the stored reply (``{"id", "role", "content",
    "created_at"}``) and ``text`` the whole reply. A backend failure mid-reply raises
    :class:`ApiError` with the server's code (502/503/504 as ``status``); ``text`` then
    holds what arrived, which the server stored marked ``incomplete``. Iterating to the
    end, ``close()`` or a ``with`` block releases the connection.
    """

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self.message: dict[str, Any] | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for event in protocol.parse(protocol.iter_body(self._response)):
                data = jsonlib.loads(event.data)
                if event.event == "delta":
                    self.text += data["content"]
                    yield data["content"]
                elif event.event == "done":
                    self.message = data
                    return
                elif event.event == "error":
                    error = data["error"]
                    # An error event carries the code; the status goes with it.
                    raise ApiError(protocol.STATUS_OF.get(error["code"], 502),
                                   error["code"], error["message"])
        except requests.Timeout as e:
            raise TransportError("timeout", "The server stopped sending the reply.") from e
        except requests.RequestException as e:  # connection reset, broken chunking, ...
            raise TransportError("stream_broken", "The connection broke mid-reply.") from e
        except (ValueError, KeyError, TypeError) as e:
            raise TransportError("bad_response", "The server sent an unreadable event.") from e
        finally:
            self.close()
        raise TransportError("stream_broken", "The event stream ended before the reply did.")

    def close(self) -> None:
        """Release the connection (the server keeps what was generated, marked incomplete)."""
        self._response.close()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "done" if self.message is not None else f"{len(self.text)} chars so far"
        return f"<ReplyStream {state}>"


# How a whole export ends; a stream that ends otherwise was cut.
_EXPORT_ENDINGS = {"json": b"]}\n", "markdown": b" messages -->\n"}


def _body(response: requests.Response, ending: bytes) -> Iterator[bytes]:
    """The bytes of a streamed download; TransportError if it breaks or ends early."""
    tail = b""
    try:
        with response:
            for chunk in protocol.iter_body(response):
                tail = (tail + chunk)[-64:]
                yield chunk
    except requests.Timeout as e:
        raise TransportError("timeout", "The server stopped sending the export.") from e
    except requests.RequestException as e:
        raise TransportError("stream_broken", "The connection broke mid-export.") from e
    if not tail.endswith(ending):
        raise TransportError("stream_broken", "The export ended before it was whole.")


def _write_atomically(path: Path, chunks: Iterator[bytes]) -> Path:
    """Write ``chunks`` to ``path`` (mode 0600) through ``<path>.part``; nothing on failure."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def _decoded(response: requests.Response) -> Any:
    """The JSON of a response (None for 204), or the server's error as ApiError."""
    if response.status_code == 204:
        return None
    try:
        data = response.json()
    except (ValueError, RecursionError) as e:
        if response.ok:
            raise TransportError("bad_response", "The server did not answer JSON.") from e
        # An error page from something in between (a proxy's HTML 502): keep its status.
        raise ApiError(response.status_code, "bad_response",
                       "The server did not answer JSON.") from e
    if not response.ok:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        # Flask-Limiter sends Retry-After on every limited route; it means "wait" only here.
        wait = (retry_after(response.headers.get("Retry-After"))
                if response.status_code in (429, 503) else None)
        raise ApiError(response.status_code, str(error.get("code", "error")),
                       str(error.get("message", response.reason)), retry_after=wait)
    return data


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); None if unusable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _quote(segment: str) -> str:
    return quote(segment, safe="")
