"""Logs never carry message content, passwords, tokens, cookies or keys — at any level."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from securechat import ApiError, BackgroundServer, ChatClient, create_app
from securechat.lab.attacks import session_cookie_name

from .helpers import FAST

MARKER = "zebra-7Q-private-marker"
TITLE = "title-9X-private-marker"
PASSWORD = "pw-5K-private-marker"
WRONG = "pw-3J-wrong-marker"


def test_a_full_chat_logs_nothing_secret(instance: Path, caplog: pytest.LogCaptureFixture,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records reach it
    app = create_app({**FAST, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "2 per minute"},
                     instance_path=instance)
    secrets: list[str] = [MARKER, TITLE, PASSWORD, WRONG, app.config["SECRET_KEY"]]
    with BackgroundServer(app) as server, ChatClient(server.url) as client:
        client.register("alice", PASSWORD)
        with pytest.raises(ApiError):
            client.login("alice", WRONG)
        client.login("alice", PASSWORD)
        cookie = client.http.cookies.get(session_cookie_name(app))
        assert cookie and client.csrf_token
        token = cookie.rsplit(".", 1)[0]
        secrets += [cookie, token, client.csrf_token]
        conv = client.new_conversation(TITLE)
        assert MARKER in client.send(conv["id"], f"hello {MARKER}")["reply"]["content"]
        stream = client.http.post(
            f"{server.url}/api/conversations/{conv['id']}/messages",
            json={"content": f"again {MARKER}"}, timeout=30,
            headers={"X-CSRF-Token": client.csrf_token, "Accept": "text/event-stream"})
        assert MARKER in stream.text
        history = client.history(conv["id"])
        assert sum(MARKER in m["content"] for m in history) == 4
        client.logout()
        # A replayed cookie, a forged one and rate-limited guesses are logged paths too.
        replay = requests.get(f"{server.url}/api/session", timeout=30,
                              cookies={session_cookie_name(app): cookie})
        assert replay.status_code == 401
        for _ in range(2):
            with pytest.raises(ApiError):
                client.login("alice", WRONG)
    out, err = capfd.readouterr()
    logged = "\n".join([caplog.text, out, err,
                        *(r.getMessage() for r in caplog.records),
                        *(str(r.args) for r in caplog.records)])
    # The capture works: server-side records (the login guard's) were seen.
    assert any(r.name == "securechat.server.limits" for r in caplog.records), caplog.text
    for secret in secrets:
        assert secret not in logged, f"{secret[:6]}… appears in the logs"
