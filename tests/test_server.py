"""BackgroundServer: loopback only, a free port, quiet, and nothing left after stop()."""

from __future__ import annotations

import socket
import threading

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
