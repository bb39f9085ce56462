"""What several test modules share: test settings, the error contract, and a user's actions."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from securechat import store
from securechat.protocol import CSRF_HEADER

# Tests may lower the KDF cost (the default may not): Argon2id at 64 KiB, one pass.
FAST = {"KDF_ARGON2_MEMORY_KIB": 64, "KDF_ARGON2_ITERATIONS": 1, "RATELIMIT_ENABLED": False}
PASSWORD = "correct horse battery"
COOKIE = "securechat_session"
_names = itertools.count()

# A response of either layer: the test client's, or requests' over real HTTP.
AnyResponse = TestResponse | requests.Response


def unique_name(prefix: str = "user") -> str:
    """A fresh valid username."""
    return f"{prefix}{next(_names)}"


def assert_error(response: AnyResponse, status: int, code: str | None = None) -> None:
    """The contract's error shape: JSON {"error": {"code", "message"}} and nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.text)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text and "<html" not in response.text.lower()


@contextmanager
def open_database(app: Flask) -> Iterator[Any]:
    """The app's database opened beside it, SQLite or PostgreSQL (autocommit); closed after.

    Its ``execute`` takes ``?`` placeholders on both, as the queries in the package do.
    """
    db = store.connect(app.config["DATABASE"])
    try:
        yield db
    finally:
        db.close()


class AuthActions:
    """One browser on the Flask test client: register, log in, log out (flaskr's AuthActions).

    It remembers the CSRF token of its session; ``csrf`` is the header to send with it.
    """

    def __init__(self, http: FlaskClient) -> None:
        self.http = http
        self.token: str | None = None

    @property
    def csrf(self) -> dict[str, str]:
        """The CSRF header of the current session (empty when logged out)."""
        return {CSRF_HEADER: self.token} if self.token else {}

    def register(self, username: str = "alice", password: str = PASSWORD,
                 **kwargs: Any) -> TestResponse:
        """POST /api/register; ``kwargs`` go to the test client (e.g. ``environ_base``)."""
        return self.http.post("/api/register", json={"username": username,
                                                     "password": password}, **kwargs)

    def login(self, username: str = "alice", password: str = PASSWORD,
              **kwargs: Any) -> dict[str, str]:
        """Log in (which must succeed); return the CSRF header of the new session."""
        response = self.http.post("/api/login", json={"username": username,
                                                      "password": password}, **kwargs)
        assert response.status_code == 200, response.text
        self.token = response.get_json()["csrf_token"]
        return self.csrf

    def signup(self, username: str = "alice", password: str = PASSWORD) -> dict[str, str]:
        """Register (which must succeed) and log in; the CSRF header."""
        assert self.register(username, password).status_code == 201
        return self.login(username, password)

    def logout(self) -> TestResponse:
        """POST /api/logout with the CSRF header; forget the token."""
        response = self.http.post("/api/logout", headers=self.csrf)
        self.token = None
        return response

    # --- the chat calls most tests need as set-up ------------------------------------------

    def new_conversation(self, title: str | None = None) -> dict[str, Any]:
        """Create a conversation (which must succeed); its JSON."""
        body = {} if title is None else {"title": title}
        response = self.http.post("/api/conversations", json=body, headers=self.csrf)
        assert response.status_code == 201, response.text
        return response.get_json()

    def send(self, conv_id: str, content: Any) -> TestResponse:
        """POST a message body ``{"content": content}`` with the CSRF header."""
        return self.http.post(f"/api/conversations/{conv_id}/messages",
                              json={"content": content}, headers=self.csrf)

    def history(self, conv_id: str) -> list[str]:
        """The contents of a conversation's latest (up to 200) messages, oldest first."""
        response = self.http.get(f"/api/conversations/{conv_id}/messages?limit=200")
        assert response.status_code == 200, response.text
        return [m["content"] for m in response.get_json()["messages"]]

    def conversations(self) -> list[dict[str, Any]]:
        """The first page (up to 200) of the user's conversations."""
        response = self.http.get("/api/conversations?limit=200")
        assert response.status_code == 200, response.text
        return response.get_json()["conversations"]
