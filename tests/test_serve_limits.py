"""The review's availability findings, proven against the real `python -m securechat serve`.

Each of these passed under Flask's test client and failed under waitress: proxy headers
are stripped before the app sees them, threads and connections are finite, signals differ.
"""

from __future__ import annotations

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

from securechat.testing import FakeOpenAI

from .conftest import PASSWORD
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
    served = _start(serving, instance, SECURECHAT_KDF_LOG_N="17")
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


def test_too_few_threads_for_the_caps_is_refused(instance: Path) -> None:
    proc = subprocess.run(serve_command(instance, "--threads", "8"), capture_output=True,
                          text=True, env=serve_env(), timeout=120)
    assert proc.returncode == 2 and "--threads 8 is too few" in proc.stderr
    refusal = [ln for ln in proc.stderr.splitlines() if ln.startswith("securechat:")]
    assert len(refusal) == 1 and "Traceback" not in proc.stderr


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
        # 160 half-sent requests from four addresses: more than waitress's default 100.
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


def test_waitress_own_errors_are_json(serving: list[Served], instance: Path) -> None:
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
