"""The review's availability findings, proven against the real `python -m securechat serve`.

Each of these passed under Flask's test client and failed under the shipped server at the
time: proxy headers stripped before the app saw them, finite threads and connections,
signals handled differently.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from securechat import ChatClient
from securechat.testing import FakeOpenAI

from .helpers import PASSWORD
from .served import Served, read_line, serve_command, serve_env

WRONG = "not the password"


@pytest.fixture
def serving(instance: Path) -> Iterator[list[Served]]:
    """Started `serve` processes, all killed afterwards."""
    started: list[Served] = []
    yield started
    for served in started:
        served.kill()


def _start(serving: list[Served], instance: Path, **env: str) -> Served:
    served = Served(instance, serve_env(**env))
    serving.append(served)
    return served


def _login(url: str, name: str, password: str = WRONG, forwarded: str | None = None,
           source: str = "127.0.0.1") -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with requests.Session() as http:
        http.mount("http://", _SourceAdapter(source))
        return http.post(url + "/api/login", json={"username": name, "password": password},
                         headers=headers, timeout=30).status_code


class _SourceAdapter(requests.adapters.HTTPAdapter):
    """Connect from a chosen loopback address (127.0.0.2 is another client, on this host)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


# --- 1. PROXY_FIX under serve ----------------------------------------------------------


def test_behind_a_trusted_proxy_each_client_has_its_own_login_budget(
        serving: list[Served], instance: Path) -> None:
    served = _start(serving, instance, SECURECHAT_PROXY_FIX="1",
                    SECURECHAT_RATELIMIT_ENABLED="true",
                    SECURECHAT_LOGIN_RATE_LIMIT="2 per minute")
    # Every request comes from the proxy (127.0.0.1); the proxy names the client.
    assert [_login(served.url, f"user{i}", forwarded="203.0.113.1") for i in range(3)] == \
        [401, 401, 429]
    # Another client behind the same proxy is not locked out by the first one.
    assert _login(served.url, "user9", forwarded="203.0.113.2") == 401


def test_behind_a_trusted_proxy_registration_is_per_client(serving: list[Served],
                                                           instance: Path) -> None:
    served = _start(serving, instance, SECURECHAT_PROXY_FIX="1",
                    SECURECHAT_RATELIMIT_ENABLED="true",
                    SECURECHAT_REGISTER_RATE_LIMIT="2 per minute")

    def register(name: str, client: str) -> int:
        return requests.post(served.url + "/api/register", timeout=30,
                             json={"username": name, "password": PASSWORD},
                             headers={"X-Forwarded-For": client}).status_code

    assert [register(f"reg{i}", "203.0.113.1") for i in range(3)] == [201, 201, 429]
    assert register("reg9", "203.0.113.2") == 201


def test_without_proxy_fix_forwarded_headers_are_ignored(serving: list[Served],
                                                         instance: Path) -> None:
    served = _start(serving, instance, SECURECHAT_RATELIMIT_ENABLED="true",
                    SECURECHAT_LOGIN_RATE_LIMIT="2 per minute")
    assert [_login(served.url, f"user{i}", forwarded=f"198.51.100.{i}") for i in range(3)] == \
        [401, 401, 429]
    # A made-up address changes nothing; another real client (127.0.0.2) is unaffected.
    assert _login(served.url, "user8", forwarded="198.51.100.77") == 429
    assert _login(served.url, "user9", source="127.0.0.2") == 401


# --- 4. a few requests cannot freeze the server -----------------------------------------


def _health(url: str) -> int:
    # The timeout is a liveness bound (a hung server fails), not a speed assertion.
    return requests.get(url + "/api/health", timeout=10).status_code


def test_stalled_backend_streams_cannot_take_every_thread(serving: list[Served],
                                                          instance: Path) -> None:
    with FakeOpenAI(stall_seconds=60) as fake:
        served = _start(serving, instance, SECURECHAT_RESPONDER="openai",
                        SECURECHAT_OPENAI_BASE_URL=fake.base_url,
                        SECURECHAT_OPENAI_MODEL="m", SECURECHAT_OPENAI_READ_TIMEOUT="60",
                        SECURECHAT_MAX_STREAMS="4", SECURECHAT_OPENAI_MAX_ATTEMPTS="1")
        sessions = []
        for i in range(3):
            http = requests.Session()
            assert http.post(served.url + "/api/register", timeout=30, json={
                "username": f"staller{i}", "password": PASSWORD}).status_code == 201
            csrf = http.post(served.url + "/api/login", timeout=30, json={
                "username": f"staller{i}", "password": PASSWORD}).json()["csrf_token"]
            conv = http.post(served.url + "/api/conversations", json={}, timeout=30,
                             headers={"X-CSRF-Token": csrf}).json()["id"]
            sessions.append((http, csrf, conv))
        fake.fail_next(*["stall"] * 40)

        def stream(index: int) -> int:
            http, csrf, conv = sessions[index % 3]
            with http.post(f"{served.url}/api/conversations/{conv}/messages",
                           json={"content": f"stalled {index}"}, stream=True, timeout=(10, 90),
                           headers={"X-CSRF-Token": csrf, "Accept": "text/event-stream"}
                           ) as response:
                if response.status_code == 200:
                    next(response.iter_content(1))  # the stream is open and waiting
                    hold.wait(60)
                return response.status_code

        hold = threading.Event()
        with ThreadPoolExecutor(12) as pool:
            first = [pool.submit(stream, i) for i in range(4)]
            while len(fake.requests) < 4:
                time.sleep(0.05)
            # The server is full: more sends are refused at once, never queued ...
            extra = [pool.submit(stream, i) for i in range(4, 12)]
            refused = [f.result(timeout=30) for f in extra]
            # ... and the health check, and other requests, still answer.
            health = [_health(served.url) for _ in range(5)]
            hold.set()
            fake.release()
            assert [f.result(timeout=60) for f in first] == [200] * 4
    assert set(refused) <= {429, 503} and 503 in refused
    assert health == [200] * 5


def test_a_storm_of_logins_cannot_starve_the_health_check(serving: list[Served],
                                                         instance: Path) -> None:
    # Real OWASP-cost scrypt (128 MiB, ~0.3 s): 16 accounts log in in a loop.
    served = _start(serving, instance, SECURECHAT_KDF="scrypt", SECURECHAT_KDF_LOG_N="17")
    names = [f"storm{i}" for i in range(16)]
    for name in names:
        assert requests.post(served.url + "/api/register", timeout=120, json={
            "username": name, "password": PASSWORD}).status_code == 201
    stop = threading.Event()
    answers: list[int] = []

    def loop(name: str) -> None:
        while not stop.is_set():
            answers.append(requests.post(served.url + "/api/login", timeout=120, json={
                "username": name, "password": PASSWORD}).status_code)

    threads = [threading.Thread(target=loop, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    try:
        health, waits = [], []
        for _ in range(10):
            started = time.monotonic()
            health.append(_health(served.url))
            waits.append(time.monotonic() - started)
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    print(f"\n[serve] health during a login storm: max {max(waits) * 1000:.0f} ms; "
          f"logins {answers.count(200)} ok, {answers.count(503)} busy")
    assert health == [200] * 10
    assert set(answers) <= {200, 503} and 503 in answers  # the queue is bounded


# --- 8. slowloris ---------------------------------------------------------------------


def _half_open(source: str, port: int, count: int) -> list[socket.socket]:
    """Connections that send half a request and then nothing."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                        source_address=(source, 0))
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        held.append(sock)
    return held


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_many_half_open_connections_cannot_lock_others_out(serving: list[Served],
                                                           instance: Path) -> None:
    served = _start(serving, instance)
    held: list[socket.socket] = []
    try:
        # 160 half-sent requests from four addresses: more than the 32 one address may hold.
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            held += _half_open(source, served.port, 40)
        assert [_health(served.url) for _ in range(3)] == [200] * 3
        # Past 32 per address the extra connections were closed by the server.
        readable, _, _ = select.select(held, [], [], 2.0)
        closed = sum(1 for sock in readable if _closed(sock))
        assert closed == 4 * (40 - 32)
    finally:
        for sock in held:
            sock.close()


def test_the_servers_own_errors_are_json(serving: list[Served], instance: Path) -> None:
    served = _start(serving, instance)
    over = requests.post(served.url + "/api/register", data=b" " * (3 * 1024 * 1024),
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"
    assert over.headers["X-Content-Type-Options"] == "nosniff"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):  # the server closes after an error
            answer += data
    assert answer.startswith(b"HTTP/1.1 400") and b'"code": "bad_request"' in answer


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``; return one whole response (Content-Length bodies only)."""
    sock.sendall(request)
    answer = b""
    while not _whole(answer) and (data := sock.recv(65536)):
        answer += data
    return answer


def _whole(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


def _head(answer: bytes) -> list[bytes]:
    return answer.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")


def test_a_connection_the_server_will_close_says_connection_close(
        serving: list[Served], instance: Path) -> None:
    served = _start(serving, instance, SECURECHAT_MAX_CONTENT_LENGTH="1024")
    body = b" " * 1025  # over the limit; all of it sent, so the close is a clean one
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        # Kept alive: nothing said, and a second request goes over the same connection.
        health = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(2):
            head = _head(_exchange(sock, health))
            assert head[0].startswith(b"http/1.1 200") and not [
                h for h in head if h.startswith(b"connection:")]
        # A body too large to read: the connection ends after the 413, and says so first.
        answer = _exchange(sock, b"POST /api/register HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1025\r\n"
                           b"\r\n" + body)
        head = _head(answer)
        assert head[0].startswith(b"http/1.1 413")
        assert [h for h in head if h.startswith(b"connection:")] == [b"connection: close"]
        assert sock.recv(65536) == b""  # and it did close
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        # A client that asks to close is answered with the same word, once.
        head = _head(_exchange(sock, b"GET /api/health HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n"))
        assert [h for h in head if h.startswith(b"connection:")] == [b"connection: close"]
        assert sock.recv(65536) == b""


# --- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_stops_serve_even_when_sigint_was_ignored(instance: Path) -> None:
    # A script (or nohup) that ignores SIGINT passes that on to the server it starts.
    proc = subprocess.Popen(serve_command(instance), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=serve_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert "listening on" in read_line(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "securechat stopped" in out
    assert "Traceback" not in err


# --- deadlines: a request must arrive in time; a reader must read ------------------------


def test_a_request_trickled_a_byte_at_a_time_is_cut_at_the_deadline(
        serving: list[Served], instance: Path) -> None:
    served = _start(serving, instance, SECURECHAT_REQUEST_TIMEOUT="1.5")
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        started = time.monotonic()
        request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        closed = False
        for byte in request:  # one byte every 0.1 s: each read makes progress
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and _closed(sock):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the server kept a trickling request open for 20 s"
    assert elapsed < 10
    assert _health(served.url) == 200


def _stalled_reader(port: int, request: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def test_a_client_that_stops_reading_is_dropped_and_frees_its_stream_slot(
        serving: list[Served], instance: Path) -> None:
    # Far more than every socket buffer on the way: the stream must wait for its reader.
    long_reply = " ".join(f"word{i}" for i in range(300_000))

    def reply(messages: list[dict[str, str]]) -> str:
        return long_reply if "long" in messages[-1]["content"] else "short"

    with FakeOpenAI(reply) as fake:
        served = _start(serving, instance, SECURECHAT_RESPONDER="openai",
                        SECURECHAT_OPENAI_BASE_URL=fake.base_url,
                        SECURECHAT_OPENAI_MODEL="m", SECURECHAT_WRITE_TIMEOUT="1.5",
                        SECURECHAT_OPENAI_MAX_REPLY_CHARS="5000000",
                        SECURECHAT_MAX_STREAMS_PER_USER="1")
        http = requests.Session()
        http.post(served.url + "/api/register", timeout=30,
                  json={"username": "reader", "password": PASSWORD})
        csrf = http.post(served.url + "/api/login", timeout=30, json={
            "username": "reader", "password": PASSWORD}).json()["csrf_token"]
        conv = http.post(served.url + "/api/conversations", json={}, timeout=30,
                         headers={"X-CSRF-Token": csrf}).json()["id"]
        cookies = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        body = json.dumps({"content": "a long answer, please"}).encode()
        request = (f"POST /api/conversations/{conv}/messages HTTP/1.1\r\nHost: x\r\n"
                   f"Cookie: {cookies}\r\nX-CSRF-Token: {csrf}\r\n"
                   "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        sock = _stalled_reader(served.port, request)
        try:
            while not fake.requests:  # the stalled stream has its slot, and its backend call
                time.sleep(0.05)
            # The user's only stream slot is held by a reader that reads nothing; the
            # server gives up on it after WRITE_TIMEOUT, and the slot is free again.
            deadline = time.monotonic() + 30
            refused = http.post(f"{served.url}/api/conversations/{conv}/messages",
                                json={"content": "too soon"}, timeout=60,
                                headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 429  # the slot is taken while the stream lives
            while True:
                again = http.post(f"{served.url}/api/conversations/{conv}/messages",
                                  json={"content": "again"}, timeout=60,
                                  headers={"X-CSRF-Token": csrf})
                if again.status_code != 429 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert again.status_code == 201, again.text
        finally:
            sock.close()
        # What the stalled stream got so far is kept, marked incomplete.
        with ChatClient(served.url) as reader:
            reader.http.cookies.update(http.cookies)
            history = reader.history(conv)
        code, _, err = served.stop()
    assert code == 0 and "Traceback" not in err  # a dropped reader is not a server error
    cut = [m for m in history if m["role"] == "assistant" and m.get("incomplete")]
    assert len(cut) == 1 and long_reply.startswith(cut[0]["content"])


def test_many_stalled_readers_hold_no_worker(serving: list[Served], instance: Path) -> None:
    # A page larger than every socket buffer, requested by clients that never read it.
    served = _start(serving, instance)
    http = requests.Session()
    http.post(served.url + "/api/register", timeout=30,
              json={"username": "hoarder", "password": PASSWORD})
    csrf = http.post(served.url + "/api/login", timeout=30, json={
        "username": "hoarder", "password": PASSWORD}).json()["csrf_token"]
    conv = http.post(served.url + "/api/conversations", json={}, timeout=30,
                     headers={"X-CSRF-Token": csrf}).json()["id"]
    for _ in range(40):
        http.post(f"{served.url}/api/conversations/{conv}/messages", timeout=30,
                  json={"content": "é" * 30000}, headers={"X-CSRF-Token": csrf})
    cookies = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    request = (f"GET /api/conversations/{conv}/messages?limit=200 HTTP/1.1\r\nHost: x\r\n"
               f"Cookie: {cookies}\r\n\r\n").encode()
    stalled = [_stalled_reader(served.port, request) for _ in range(30)]
    try:
        assert [_health(served.url) for _ in range(3)] == [200] * 3
        page = http.get(f"{served.url}/api/conversations/{conv}/messages", timeout=30)
        assert page.status_code == 200 and len(page.json()["messages"]) > 0
    finally:
        for sock in stalled:
            sock.close()


# --- several workers --------------------------------------------------------------------


def test_workers_share_the_port_and_stop_together(instance: Path) -> None:
    served = Served(instance, serve_env(), args=("--workers", "2"))
    try:
        assert "2 workers" in served.first_line
        deadline = time.monotonic() + 30
        while len(workers := _children(served.pid)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.1)
        with requests.Session() as http:
            http.post(served.url + "/api/register", timeout=30,
                      json={"username": "shared", "password": PASSWORD})
            for _ in range(6):  # the database and the sessions are the workers' common ground
                with requests.Session() as other:
                    login = other.post(served.url + "/api/login", timeout=30, json={
                        "username": "shared", "password": PASSWORD})
                    assert login.status_code == 200
                    assert other.get(served.url + "/api/session", timeout=30).ok
        # A worker that dies is replaced.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(_children(served.pid)) < 2 or workers[0] in _children(served.pid):
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.1)
        assert _health(served.url) == 200
        code, out, err = served.stop()
    finally:
        served.kill()
    assert code == 0 and "securechat stopped" in out and "Traceback" not in err
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_keeps_dying_is_restarted_less_and_less_often(instance: Path) -> None:
    """Killed again as soon as it starts, a worker waits 0.5, 1, 2, 4 s: never a tight loop."""
    served = Served(instance, serve_env(), args=("--workers", "2"))
    try:
        deadline = time.monotonic() + 30
        while len(known := _children(served.pid)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.05)
        victim = known[0]
        for _ in range(4):
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not (new := [p for p in _children(served.pid) if p not in known]):
                assert time.monotonic() < deadline, "the worker was not started again"
                time.sleep(0.05)
            known.extend(new)
            victim = new[0]
        code, _, err = served.stop()
    finally:
        served.kill()
    pauses = re.findall(r"starting another(?: in ([0-9.]+) s)?", err)
    assert pauses == ["0.5", "1", "2", "4"], err
    assert code == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and " Z " not in stat:
                found.append(int(entry.name))
    return sorted(found)


def test_zero_workers_is_refused(instance: Path) -> None:
    proc = subprocess.run(serve_command(instance, "--workers", "0"), capture_output=True,
                          text=True, env=serve_env(), timeout=120)
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr
