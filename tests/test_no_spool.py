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
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from securechat import ApiError, ChatClient

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
    # Ten of one user's ghost replies stalled at once: past the per-user cap of 3, which a
    # reply that is still being written (or coalesced) holds.
    served = Served(instance, serve_env(SECURECHAT_MAX_STREAMS_PER_USER="10"))
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
    page = _request("GET", f"/api/conversations/{conv}/messages?limit=200", client)
    files, received = _read_slowly(served, [page] * 3, _answer)
    assert any("securechat.sqlite3" in name for name in files)  # the scan sees files
    # And the reader gets the whole page once it reads: back-pressure, not loss.
    assert received.startswith(b"HTTP/1.1 200") and MARKER.encode() in received


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


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes or ends a chunked body."""
    sock.settimeout(60)
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        data = sock.recv(1 << 20)
        if not data:
            break
        received += data
    return received

def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    return answer


def _read_slowly(served: Served, requests: list[bytes],
                 read: Callable[[socket.socket], bytes]) -> tuple[list[str], bytes]:
    """Each request on a socket that reads nothing: no plaintext may reach a file meanwhile.

    Returns the files the server had open then, and the last answer, read whole at the end.
    """
    readers = []
    try:
        for request in requests:
            sock = _slow_socket(served.port)
            sock.sendall(request)
            readers.append(sock)
        _settle(served.pid)
        files = assert_no_plaintext_on_disk(served.pid)
        with readers.pop() as sock:
            return files, read(sock)
    finally:
        for sock in readers:
            sock.close()


def test_a_slowly_read_export_is_never_written_to_disk(
        served: Served, history: tuple[ChatClient, str]) -> None:
    client, _ = history
    exports = [_request("GET", f"/api/export?format={fmt}", client)
               for fmt in ("json", "markdown")]
    # 6 MB of export, and the server waits for its reader: back-pressure, not files.
    _, received = _read_slowly(served, exports, _read_all)
    assert received.startswith(b"HTTP/1.1 200") and MARKER.encode() in received
    assert b"<!-- export complete: 1 conversations, 200 messages -->" in received


def test_a_slowly_read_ghost_reply_is_never_written_to_disk(
        served: Served, history: tuple[ChatClient, str]) -> None:
    client, _ = history
    turns = [{"role": "user", "content": BODY[:32_000]},
             {"role": "assistant", "content": "noted"},
             {"role": "user", "content": BODY[:32_000]}]
    request = _request("POST", "/api/ghost", client, json.dumps({"messages": turns}).encode())
    streamed = request.replace(b"\r\n\r\n", b"\r\nAccept: text/event-stream\r\n\r\n", 1)
    _, received = _read_slowly(served, [streamed] * 10, _read_all)
    assert received.startswith(b"HTTP/1.1 200") and MARKER.encode() in received
    assert b"event: done" in received


def _import_body(size: int) -> bytes:
    """A valid export of about ``size`` bytes, every message holding the marker."""
    message = {"role": "user", "content": BODY[:30_000],
               "created_at": "2026-01-01T00:00:00Z"}
    per = len(json.dumps(message, ensure_ascii=False).encode()) + 1
    conv = {"title": "imported", "created_at": "2026-01-01T00:00:00Z", "starred": False,
            "messages": [message] * max(1, size // per)}
    return json.dumps({"format": "securechat-export", "version": 1, "conversations": [conv]},
                      ensure_ascii=False).encode()


def test_a_large_import_sent_slowly_is_never_written_to_disk(
        served: Served, history: tuple[ChatClient, str]) -> None:
    client, _ = history
    body = _import_body(8 * 1024 * 1024)  # 8 MiB, under MAX_IMPORT_BYTES (64 MiB): held in memory
    request = _request("POST", "/api/import", client, body)
    with _slow_socket(served.port) as sock:
        sock.sendall(request[:-10])
        _settle(served.pid)
        assert_no_plaintext_on_disk(served.pid)
        sock.sendall(request[-10:])
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert b'"imported":1' in answer
    assert_no_plaintext_on_disk(served.pid)


def test_serve_takes_imports_up_to_their_own_cap(instance: Path) -> None:
    served = Served(instance, serve_env(SECURECHAT_MAX_IMPORT_BYTES=str(3 * 1024 * 1024)))
    try:
        with ChatClient(served.url, timeout=60) as client:
            client.register("ada", PASSWORD)
            client.login("ada", PASSWORD)
            # Over MAX_CONTENT_LENGTH (1 MiB), under MAX_IMPORT_BYTES: the import alone passes.
            medium = _import_body(2 * 1024 * 1024)
            assert len(medium) > 1024 * 1024
            assert client.import_export(medium)["imported"] == 1
            conv = client.new_conversation()["id"]
            with pytest.raises(ApiError) as info:
                client.request("POST", f"/api/conversations/{conv}/messages",
                               json={"content": "x", "padding": "y" * (2 * 1024 * 1024)})
            assert (info.value.status, info.value.code) == (413, "too_large")
            with pytest.raises(ApiError) as info:
                client.import_export(_import_body(4 * 1024 * 1024))
            assert (info.value.status, info.value.code) == (413, "too_large")
            assert len(client.conversations()) == 2  # the refused one added nothing
    finally:
        served.kill()



def test_one_large_import_at_a_time_the_next_is_refused_unread(
        served: Served, history: tuple[ChatClient, str]) -> None:
    """Large bodies cannot add up in memory: a second is a 503 before a byte of it is read."""
    client, _ = history
    first = _request("POST", "/api/import", client, _import_body(4 * 1024 * 1024))
    with _slow_socket(served.port) as holder:
        holder.sendall(first[:-10])  # the whole body but its end: it holds the slot
        _settle(served.pid, 0.5)
        # Anyone may ask: a stranger's body is never read either (no session: 401)...
        stranger = (b"POST /api/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", served.port)) as other:
            other.sendall(stranger)
            refused = _answer(other)
        assert refused.startswith(b"HTTP/1.1 401"), refused[:300]
        assert b"connection: close" in refused.lower()
        # ... and the user's own second large import waits its turn, unread too.
        second = _request("POST", "/api/import", client, b"")
        second = second.replace(b"Content-Length: 0", b"Content-Length: 50000000")
        with socket.create_connection(("127.0.0.1", served.port)) as other:
            other.sendall(second)
            refused = _answer(other)
        assert refused.startswith(b"HTTP/1.1 503"), refused[:300]
        assert b"retry-after: 5" in refused.lower() and b'"unavailable"' in refused
        assert b"connection: close" in refused.lower()
        # A small import, and everything else, go on as usual meanwhile.
        assert client.search("nothing like this")["results"] == []
        holder.sendall(first[-10:])
        assert _answer(holder).startswith(b"HTTP/1.1 201")
    # The slot is free again.
    assert client.import_export(_import_body(2 * 1024 * 1024))["imported"] == 1
