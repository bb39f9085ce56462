"""ChatClient: timeouts, one package exception with the JSON error's code, all pages."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from securechat import (
    ApiError,
    BackgroundServer,
    ChatClient,
    SecureChatError,
    TransportError,
    create_app,
)
from securechat.client import retry_after
from securechat.widgets import describe_error

from .helpers import FAST


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        with (
            ChatClient(f"http://127.0.0.1:{port}", timeout=5) as client,
            pytest.raises(TransportError) as info,
        ):
            client.login("someone", "password1")
    assert info.value.code == "unreachable" and "server running" in info.value.message
    assert isinstance(info.value, SecureChatError) and info.value.__cause__ is not None


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_timeout_is_a_clear_error(silent_port: int) -> None:
    with (
        ChatClient(f"http://127.0.0.1:{silent_port}", timeout=0.5) as client,
        pytest.raises(TransportError) as info,
    ):
        client.health()
    assert info.value.code == "timeout"


def test_every_call_has_a_timeout(alice: ChatClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real = alice.http.request

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(alice.http, "request", spy)
    conv = alice.new_conversation()
    alice.send(conv["id"], "x")
    alice.history(conv["id"])
    alice.conversations()
    alice.session()
    alice.delete(conv["id"])
    alice.logout()
    assert len(seen) == 7 and all(t == alice.timeout for t in seen)


def test_error_carries_code_and_message(client: ChatClient) -> None:
    with pytest.raises(ApiError) as info:
        client.login("nobody", "wrong password")
    assert (info.value.status, info.value.code) == (401, "invalid_credentials")
    assert info.value.message == "Wrong username or password."


def test_keeps_csrf_token_and_forgets_it_on_logout(alice: ChatClient) -> None:
    assert alice.csrf_token and alice.username == "alice"
    alice.logout()
    assert alice.csrf_token is None and alice.username is None
    with pytest.raises(ApiError) as info:
        alice.new_conversation()
    assert info.value.status == 401


def test_history_fetches_all_pages(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    for i in range(23):
        alice.send(conv["id"], f"p{i}")
    contents = [m["content"] for m in alice.history(conv["id"], page_size=10)]
    assert contents == [x for i in range(23) for x in (f"p{i}", f"Echo: p{i}")]


def test_conversations_fetches_all_pages(alice: ChatClient) -> None:
    ids = [alice.new_conversation(f"p{i}")["id"] for i in range(7)][::-1]
    assert [c["id"] for c in alice.conversations(page_size=2)] == ids


def test_client_raises_package_error_with_code(alice: ChatClient) -> None:
    with pytest.raises(ApiError) as info:
        alice.send("missing", "hi")
    assert info.value.status == 404 and info.value.code == "not_found"
    assert "No such conversation" in info.value.message


def test_ids_are_quoted_in_paths(alice: ChatClient) -> None:
    with pytest.raises(ApiError) as info:
        alice.send("../../register", "x")
    assert info.value.status == 404 and info.value.code == "not_found"


def test_api_errors_are_http_error_statuses_only() -> None:
    # No status 0 or 200 pretending to be an answer: those are TransportErrors.
    for status in (0, 200, 302, 600):
        with pytest.raises(ValueError):
            ApiError(status, "x", "y")
    assert ApiError(503, "unavailable", "Busy.", retry_after=5).retry_after == 5


@pytest.mark.parametrize("url", ["127.0.0.1:1", "http://[::1", "ftp://127.0.0.1/"])
def test_malformed_urls_raise_the_package_error(url: str) -> None:
    with ChatClient(url, timeout=5) as client, pytest.raises(TransportError) as info:
        client.health()
    assert info.value.code in ("request_failed", "unreachable")


# --- Retry-After -----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "seconds"), [
    ("42", 42.0), (" 7 ", 7.0), ("0", 0.0),
    ("Wed, 21 Oct 2015 07:28:42 GMT", 42.0),  # an HTTP date, 42 s after "now" below
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),   # already past
    (None, None), ("", None), ("-1", None), ("1.5", None), ("soon", None), ("\u0663", None),
])
def test_retry_after_header_values(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
    assert retry_after(header, now=now) == seconds


def test_rate_limited_error_says_how_long_to_wait(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app({**FAST, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "2 per minute"},
                     instance_path=tmp_path / "instance")
    with BackgroundServer(app) as server, ChatClient(server.url, timeout=30) as client:
        answers: list[requests.Response] = []
        real = client.http.request

        def spy(*args: Any, **kwargs: Any) -> requests.Response:
            answers.append(real(*args, **kwargs))
            return answers[-1]

        monkeypatch.setattr(client.http, "request", spy)
        for _ in range(2):
            with pytest.raises(ApiError) as info:
                client.login("nobody", "wrong password")
            assert info.value.status == 401 and info.value.retry_after is None
        with pytest.raises(ApiError) as info:
            client.login("nobody", "wrong password")
    error = info.value
    assert error.status == 429
    waited = int(answers[-1].headers["Retry-After"])
    assert error.retry_after == waited and 0 < waited <= 60
    assert describe_error(error) == (f"{error.message} Try again in "
                                     f"{'1 second' if waited == 1 else f'{waited} seconds'}.")
