"""No request or response body is ever spooled to disk by `serve`, however slowly a client reads.

`serve` (gevent) reads a request body into memory before the app runs and writes a
response to the socket as it is produced, waiting for a slow reader; a server that spools
(the one it replaced wrote bodies over 512 KiB and responses over 1 MiB to temporary
files) would put a decrypted history page in an unlinked file in /tmp. These tests hold a
slow client open and look at every file the server process has open (unlinked ones
included, through /proc/<pid>/fd).
"""

from __future__ import annotations

import io
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from securechat import ChatClient

from .helpers import PASSWORD
from .served import Served, serve_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the server's open files from /proc")

MARKER = "plaintext-marker-4c1d9e"
# Non-ASCII text: JSON escapes each character as \\u00e9 (6 bytes), so pages are large.
BODY = MARKER + " " + "é" * 31_000


def open_files(pid: int) -> dict[str, bytes]:
    """Every regular file the process has open (deleted ones too) and its content."""
    found = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if not target.startswith("/") or target.startswith("/dev/"):
            continue  # sockets, pipes, anonymous inodes, /dev/null
        try:
            found[f"{fd.name} -> {target}"] = fd.read_bytes()
        except OSError:
            continue
    return found


def assert_no_plaintext_on_disk(pid: int) -> list[str]:
    files = open_files(pid)
    holding = [name for name, data in files.items() if MARKER.encode() in data]
    assert not holding, f"the server wrote plaintext to: {holding}"
    return list(files)


@pytest.fixture
def served(instance: Path) -> Iterator[Served]:
    served = Served(instance, serve_env())
    yield served
    served.kill()


@pytest.fixture
def history(served: Served) -> Iterator[tuple[ChatClient, str]]:
    """A user with 200 messages of 31,000 characters each, all holding the marker."""
    with ChatClient(served.url, timeout=60) as client:
        client.register("ada", PASSWORD)
        client.login("ada", PASSWORD)
        conv = client.new_conversation("long")["id"]
        for _ in range(100):
            client.send(conv, BODY)
        yield client, conv


def _slow_socket(port: int) -> socket.socket:
    sock = socket.socket()
    # A tiny receive window: the server's writes back up into its own buffers at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def _request(method: str, path: str, client: ChatClient, body: bytes = b"") -> bytes:
    cookies = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookies}\r\n"
            f"X-CSRF-Token: {client.csrf_token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _settle(pid: int, seconds: float = 1.5) -> None:
    # Let the server push what it can into its buffers (or files) while nobody reads.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert Path(f"/proc/{pid}").exists()
        time.sleep(0.1)


def test_a_slowly_read_history_page_is_never_written_to_disk(
        served: Served, history: tuple[ChatClient, str]) -> None:
    client, conv = history
    readers = []
    try:
        for _ in range(3):
            sock = _slow_socket(served.port)
            sock.sendall(_request("GET", f"/api/conversations/{conv}/messages?limit=200",
                                  client))
            readers.append(sock)
        _settle(served.pid)
        files = assert_no_plaintext_on_disk(served.pid)
        assert any("securechat.sqlite3" in name for name in files)  # the scan sees files
        # And the reader gets the whole page once it reads: back-pressure, not loss.
        sock = readers.pop()
        sock.settimeout(30)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            data = sock.recv(1 << 20)
            if not data:
                break
            received += data
        assert received.startswith(b"HTTP/1.1 200") and MARKER.encode() in received
        sock.close()
    finally:
        for sock in readers:
            sock.close()


def test_pages_stay_bounded_however_long_the_messages(
        history: tuple[ChatClient, str]) -> None:
    client, conv = history
    page = client.history_page(conv, limit=200)
    assert 0 < len(page["messages"]) < 200 and page["next_before"] is not None
    assert sum(len(m["content"]) for m in page["messages"]) <= 256 * 1024
    assert len(client.history(conv)) == 200  # the pages still cover everything, in order


def test_a_large_request_body_sent_slowly_is_never_written_to_disk(
        served: Served, history: tuple[ChatClient, str]) -> None:
    client, conv = history
    # A large body (900 KiB, under the 1 MiB limit), its end held back: held in memory.
    pad = "x" * (900 * 1024)
    body = f'{{"content": "{MARKER} held back", "padding": "{pad}"}}'.encode()
    request = _request("POST", f"/api/conversations/{conv}/messages", client, body)
    with _slow_socket(served.port) as sock:
        sock.sendall(request[:-10])
        _settle(served.pid)
        assert_no_plaintext_on_disk(served.pid)
        sock.sendall(request[-10:])
        sock.settimeout(30)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201")


def test_serve_allows_no_core_dump(served: Served) -> None:
    # A core dump would write the process's memory (data keys, decrypted pages) to disk.
    limits = Path(f"/proc/{served.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
    assert line.split()[4:6] == ["0", "0"], line


def test_uploaded_files_stay_in_memory(app: Flask) -> None:
    # No route reads multipart uploads; if one ever does, werkzeug must not spool them.
    from flask import request
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(method="POST",
                             data={"file": (io.BytesIO(MARKER.encode() * 40_000), "big.txt")})
    environ = builder.get_environ()  # the test's own encoding of the body is a temp file
    try:
        with app.request_context(environ):
            upload = request.files["file"]
            assert isinstance(upload.stream, io.BytesIO)
            assert upload.read().startswith(MARKER.encode())
            upload.close()
    finally:
        environ["wsgi.input"].close()
        builder.close()
