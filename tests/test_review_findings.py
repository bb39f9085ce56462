"""Findings of the issue 13/14 security review: each test failed before its fix."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from securechat import ChatClient

from .helpers import PASSWORD, AuthActions, assert_error
from .served import Served, serve_env


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_import_time_out_of_range_is_a_400(auth: AuthActions, at: str) -> None:
    auth.signup()
    doc = {"format": "securechat-export", "version": 1, "conversations": [
        {"title": "t", "created_at": "2026-01-01T00:00:00Z", "starred": False,
         "messages": [{"role": "user", "content": "hi", "created_at": at}]}]}
    response = auth.http.post("/api/import", json=doc, headers=auth.csrf)
    assert_error(response, 400, "invalid_export")
    assert "conversations[0].messages[0].created_at" in response.get_json()["error"]["message"]


_NORMALIZE = unicodedata.normalize


def _longest_reordered_run(text: str) -> int:
    """The longest run of characters NFKC must reorder as one (each opens with a non-starter)."""
    longest = run = 0
    for char in text:
        first = _NORMALIZE("NFD", char)[:1]
        run = run + 1 if unicodedata.combining(char) or unicodedata.combining(first) else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("content", ["xa" + "\u0301\u0316" * 100, "x" + "\u0f73" * 100],
                         ids=["marks", "tibetan-vowel"])
def test_search_never_normalizes_a_long_run_of_marks(auth: AuthActions, content: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # CPython's NFKC reorders a run of combining marks in quadratic time: 32,768 of them
    # (one message) took 0.8 s, and a search opens thousands of messages on the event loop.
    auth.signup()
    conv = auth.new_conversation("marks")["id"]
    assert auth.send(conv, content).status_code == 201
    seen: list[int] = []

    def watched(form: str, text: str) -> str:
        seen.append(_longest_reordered_run(text))
        return _NORMALIZE(form, text)  # type: ignore[arg-type]

    monkeypatch.setattr(unicodedata, "normalize", watched)
    response = auth.http.post("/api/search", json={"q": "x"}, headers=auth.csrf)
    monkeypatch.undo()
    assert response.status_code == 200
    assert response.get_json()["results"]  # still found
    assert seen and max(seen) <= 31


def _cursor(value: object) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.every_store
@pytest.mark.parametrize("forged", [["2026-01-01T00:00:00Z", "a\u0000b", 5],
                                    ["2026\u0000", "x", -1]], ids=["nul-id", "nul-time"])
def test_a_forged_search_cursor_is_never_a_500(auth: AuthActions, forged: list[Any]) -> None:
    # PostgreSQL text cannot hold NUL: a cursor carrying one reached the query and failed.
    auth.signup()
    auth.new_conversation("hello there")
    response = auth.http.post("/api/search", json={"q": "hello", "before": _cursor(forged)},
                              headers=auth.csrf)
    assert response.status_code in (200, 400), response.text


@pytest.mark.every_store
@pytest.mark.parametrize("method,path", [
    ("GET", "/api/conversations/a%00b/messages"),
    ("DELETE", "/api/conversations/a%00b"),
    ("PATCH", "/api/conversations/a%00b"),
    ("DELETE", "/api/account/sessions/a%00b"),
    ("GET", "/api/conversations?before=" + _cursor([0, "2026\u0000", "x"])),
])
def test_a_nul_in_an_id_or_list_cursor_is_never_a_500(auth: AuthActions, method: str,
                                                      path: str) -> None:
    auth.signup()
    body = {"json": {"title": "x"}} if method == "PATCH" else {}
    response = auth.http.open(path, method=method, headers=auth.csrf, **body)
    assert response.status_code in (200, 400, 404), response.text


def test_a_stranger_cannot_hold_the_large_import_slot(instance: Path) -> None:
    """Without a signed session cookie a large import body is refused unread (401).

    Before: the body of anyone's POST /api/import was read into memory (up to 64 MiB,
    over REQUEST_TIMEOUT) holding the only IMPORT_CONCURRENCY slot, so a stranger kept
    every user's import at 503.
    """
    served = Served(instance, serve_env())
    try:
        with ChatClient(served.url, timeout=60) as client:
            client.register("ada", PASSWORD)
            client.login("ada", PASSWORD)
            stranger = socket.create_connection(("127.0.0.1", served.port))
            try:
                stranger.sendall(b"POST /api/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Content-Type: application/json\r\n"
                                 b"Content-Length: 60000000\r\n\r\n")
                with contextlib.suppress(OSError):  # refused: the server stops reading
                    stranger.sendall(b" " * (16 * 1024 * 1024))  # past every socket buffer
                message = {"role": "user", "content": "x" * 30_000,
                           "created_at": "2026-01-01T00:00:00Z"}
                doc = {"format": "securechat-export", "version": 1, "conversations": [
                    {"title": "big", "created_at": "2026-01-01T00:00:00Z",
                     "messages": [message] * 40}]}  # 1.2 MB: over MAX_CONTENT_LENGTH
                assert client.import_export(doc)["imported"] == 1
            finally:
                stranger.close()
    finally:
        served.kill()
