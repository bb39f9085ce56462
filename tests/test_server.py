"""BackgroundServer: loopback only, a free port, quiet, and nothing left after stop()."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import BackgroundServer, ChatClient, SecureChatError


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_start_serve_stop_leaves_nothing(app: Flask, capfd: pytest.CaptureFixture[str]) -> None:
    before = set(threading.enumerate())
    server = BackgroundServer(app).start()
    assert server.running and server.url == f"http://127.0.0.1:{server.port}"
    with ChatClient(server.url) as client:
        for _ in range(5):
            assert client.health()
        client.register("quiet", "correct horse battery")
    port = server.port
    server.stop()
    assert not server.running
    assert set(threading.enumerate()) <= before, "a thread outlived stop()"
    assert not port_is_open(port)
    out, err = capfd.readouterr()
    assert "GET /api/health" not in err + out  # no per-request log lines
    server.stop()  # twice is harmless


def test_context_manager_and_free_ports(app: Flask) -> None:
    with BackgroundServer(app) as a, BackgroundServer(app) as b:
        assert a.port != b.port
        ports = (a.port, b.port)
        assert requests.get(a.url + "/api/health", timeout=10).json() == {"status": "ok"}
        assert requests.get(b.url + "/api/health", timeout=10).json() == {"status": "ok"}
    assert not a.running and not b.running
    assert not any(port_is_open(p) for p in ports)


def test_stop_after_requests_in_flight_keeps_no_thread(app: Flask) -> None:
    before = set(threading.enumerate())
    with BackgroundServer(app) as server:
        session = requests.Session()  # keep-alive client: must not pin a server thread
        for _ in range(3):
            session.get(server.url + "/api/health", timeout=10)
    session.close()
    assert set(threading.enumerate()) <= before


def test_the_serving_loop_waits_without_a_timeout(app: Flask,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No polling: the loop wakes for a connection or for stop(), so stop() is prompt."""
    calls: list[tuple[str, float | None]] = []

    class Recording(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
        def select(self, timeout: float | None = None) -> Any:
            calls.append((threading.current_thread().name, timeout))
            return super().select(timeout)

    monkeypatch.setattr(selectors, "DefaultSelector", Recording)
    before = set(threading.enumerate())
    with BackgroundServer(app) as server, ChatClient(server.url) as client:
        assert client.health() and client.health()
        loop = f"securechat-server-{server.port}"  # the serving thread (not a request's)
    assert set(threading.enumerate()) <= before
    timeouts = [timeout for name, timeout in calls if name == loop]
    # A connection (the two requests may share one: keep-alive), then the wake-up by stop().
    assert len(timeouts) >= 2 and set(timeouts) == {None}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])  # noqa: S104
def test_only_loopback(app: Flask, host: str) -> None:
    with pytest.raises(SecureChatError, match="loopback"):
        BackgroundServer(app, host=host)


def test_start_twice_refused(app: Flask) -> None:
    with BackgroundServer(app) as server, pytest.raises(SecureChatError):
        server.start()


def test_url_before_start_is_an_error(app: Flask) -> None:
    with pytest.raises(SecureChatError):
        _ = BackgroundServer(app).url


# --- stopped even when nobody calls stop() ---------------------------------------------

# Run in a fresh interpreter: serve, then exit (or drop the server) without calling stop().
_LEFT_RUNNING = """
import gc, json, shutil, sys, tempfile, threading
from pathlib import Path
from typing import Any

from securechat import BackgroundServer, ChatClient, create_app

report, how = Path(sys.argv[1]), sys.argv[2]
workdir = Path(tempfile.mkdtemp(prefix="securechat-finalizer-"))


def on_stop():
    # What is left of the server when it says it stopped: no thread of it may remain.
    threads = [t.name for t in threading.enumerate() if t.name.startswith("securechat-server")]
    shutil.rmtree(workdir)
    report.write_text(json.dumps({"threads": threads}))


# The default KDF cost: a lowered one would (rightly) warn on stderr, which must stay empty.
app = create_app({}, instance_path=workdir / "instance")
server = BackgroundServer(app, on_stop=on_stop).start()
with ChatClient(server.url) as client:
    client.register("leaver", "correct horse battery")
print(workdir, server.port, flush=True)
if how == "dropped":
    del server
    gc.collect()
    print("after-drop", report.exists(), flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "dropped"])
def test_a_server_left_running_is_stopped_and_cleaned_up(tmp_path: Path, how: str) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", _LEFT_RUNNING, str(report), how],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "Exception ignored in ..." from the finalizer
    workdir, port = done.stdout.split()[:2]
    if how == "dropped":  # stopped when the last reference went, not only at exit
        assert done.stdout.split()[2:] == ["after-drop", "True"]
    assert json.loads(report.read_text()) == {"threads": []}
    assert not Path(workdir).exists()
    assert not port_is_open(int(port))


def test_on_stop_runs_after_the_threads_are_joined(app: Flask) -> None:
    seen: list[list[str]] = []

    def on_stop() -> None:
        seen.append([t.name for t in threading.enumerate() if t.name.startswith(prefix)])

    server = BackgroundServer(app, name="on-stop-check", on_stop=on_stop).start()
    prefix = f"on-stop-check-{server.port}"
    assert any(t.name == prefix for t in threading.enumerate())
    with ChatClient(server.url) as client:
        assert client.health()
    server.stop()
    server.stop()  # once only
    assert seen == [[]]
