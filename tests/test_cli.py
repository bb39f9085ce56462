"""`python -m securechat serve`: a production server that starts, serves and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat import ChatClient

from .helpers import PASSWORD
from .served import Served, refused, serve_env


@pytest.fixture
def served(instance: Path) -> Iterator[Served]:
    s = Served(instance, serve_env())
    yield s
    s.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly(served: Served, sig: int) -> None:
    with ChatClient(served.url) as client:
        assert client.health()
    code, out, err = served.stop(sig)
    assert code == 0
    assert "securechat stopped" in out
    assert "Traceback" not in err
    with ChatClient(served.url, timeout=5) as client, pytest.raises(Exception) as info:
        client.health()
    assert getattr(info.value, "code", None) == "unreachable"


def test_serve_uses_the_production_server_never_a_debugger(served: Served) -> None:
    import requests

    response = requests.get(served.url + "/api/health", timeout=10)
    # Not werkzeug's development server ("Werkzeug/3.1 Python/3.11"), and no version shown.
    assert response.headers.get("Server") == "securechat"
    missing = requests.get(served.url + "/api/nope", timeout=10)
    assert missing.status_code == 404 and "Werkzeug Debugger" not in missing.text
    served.stop()


def test_history_survives_restart_in_a_new_process(instance: Path) -> None:
    first = Served(instance, serve_env())
    try:
        with ChatClient(first.url) as client:
            client.register("nina", PASSWORD)
            client.login("nina", PASSWORD)
            conv = client.new_conversation("kept across restarts")
            for i in range(3):
                client.send(conv["id"], f"before restart {i}")
    finally:
        assert first.stop()[0] == 0
    second = Served(instance, serve_env())
    try:
        with ChatClient(second.url) as client:
            client.login("nina", PASSWORD)
            assert [c["title"] for c in client.conversations()] == ["kept across restarts"]
            contents = [m["content"] for m in client.history(conv["id"])]
            assert contents == [
                x for i in range(3) for x in (f"before restart {i}", f"Echo: before restart {i}")
            ]
    finally:
        assert second.stop()[0] == 0


@pytest.mark.parametrize("secret", ["your-secret-key-here", "dev", "changeme", "tooshort"])
def test_serve_refuses_weak_secret_and_serves_nothing(instance: Path, secret: str) -> None:
    proc = refused(instance, serve_env(SECURECHAT_SECRET_KEY=secret))
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "SECRET_KEY" in proc.stderr
    assert "listening" not in proc.stdout
    if len(secret) > 4:  # the message never echoes the value
        assert secret not in proc.stderr


def test_serve_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "securechat", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "--instance" in proc.stdout


def test_serve_bounds_request_bodies(served: Served) -> None:
    import requests

    url = served.url + "/api/register"
    headers = {"Content-Type": "application/json"}
    over = requests.post(
        url, data=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=headers, timeout=30
    )
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"
    # Far beyond the limit, serve reads no more than the limit (and a byte) before the 413.
    try:
        huge = requests.post(url, data=b" " * (12 * 1024 * 1024), headers=headers, timeout=30)
        assert huge.status_code == 413
    except requests.ConnectionError:
        pass  # or it closes the connection while the body is still being sent
    served.stop()
