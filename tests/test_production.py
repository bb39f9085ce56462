"""The production server's pieces that need no process: caps, JSON errors, the chosen address."""

from __future__ import annotations

import json
import platform
import resource
import socket
import subprocess
import sys

import pytest

from securechat.server import process, production


def test_connections_are_capped_by_the_open_files_limit(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(process, "raise_open_files_limit", lambda wanted: None)
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))
    assert process.connection_cap(500) == 500
    assert process.connection_cap(5000) == 1024 - 64
    assert "more than 1024 open files allow" in caplog.text


def test_the_open_files_limit_is_raised_for_backend_sockets_too(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    asked: list[int] = []
    monkeypatch.setattr(process, "raise_open_files_limit", asked.append)
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (4096, 4096))
    assert process.connection_cap(2000, streams=1500) == 2000
    assert asked == [2000 + 1500 + 64] and not caplog.text
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (2100, 2100))
    assert process.connection_cap(2000, streams=1500) == 2000
    assert "MAX_STREAMS=1500 backend connections" in caplog.text


def test_every_connection_sends_small_writes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCP_NODELAY: gevent's headers and body go in two writes, which Nagle would delay."""
    monkeypatch.setattr(production.WSGIHandler, "handle", lambda self: None)
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as _client:
        accepted, address = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            production.Handler(accepted, address, None).handle()
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize(("status", "code"), [("400", "bad_request"), ("414", "bad_request"),
                                              ("431", "bad_request"),
                                              ("500", "internal_error")])
def test_the_servers_own_errors_are_the_apis_json(status: str, code: str) -> None:
    raw = production.json_error(status)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head and b"nosniff" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["error"]["code"] == code


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_allocations_are_unmapped_when_freed_under_glibc() -> None:
    """serve fixes glibc's mmap threshold, so KDF memory leaves the process after a login.

    Run in a child: the setting is process-wide and this one runs the other tests.
    """
    code = "from securechat.server.process import unmap_large_allocations as u; print(u())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "True"
