"""Several real `serve` processes on one database and one Redis: any of them serves anyone.

Each process here stands for a machine: its own instance folder, the deployment's shared
secret (``SECURECHAT_SECRET_KEY``), database (the ``database`` fixture: SQLite now, a
parameter so PostgreSQL can join) and Redis (``SECURECHAT_RATELIMIT_STORAGE_URI``), under a
key prefix of the test's own.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from securechat import ApiError, ChatClient
from securechat.testing import FakeOpenAI

from .helpers import PASSWORD, unique_name
from .redis_helpers import RedisProxy, live_leases
from .served import Served, refused, serve_env

WRONG = "not the password"
Start = Callable[..., Served]


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``SECURECHAT_DATABASE`` shared by every process (SQLite: one file on this machine)."""
    folder = tmp_path / "database"
    folder.mkdir(mode=0o700)
    return str(folder / "securechat.sqlite3")


@pytest.fixture
def start(tmp_path: Path, redis_url: str, prefix: str, database: str) -> Iterator[Start]:
    """Start `serve` processes ("machines") sharing the secret, the database and the Redis.

    Call it once per process, with ``SECURECHAT_*`` overrides as keywords (``redis_url``
    for another Redis URL); the first one started migrates the database. All are killed
    afterwards.
    """
    secret = secrets.token_urlsafe(48)
    started: list[Served] = []

    def run(args: tuple[str, ...] = (), redis_url: str = redis_url, **env: str) -> Served:
        shared = {"SECURECHAT_SECRET_KEY": secret, "SECURECHAT_DATABASE": database,
                  "SECURECHAT_RATELIMIT_STORAGE_URI": redis_url,
                  "SECURECHAT_REDIS_KEY_PREFIX": prefix}
        served = Served(tmp_path / f"machine{len(started)}",
                        serve_env(**{**shared, **env}), args=args)
        started.append(served)
        return served

    yield run
    for served in started:
        served.kill()


def _client(url: str, like: ChatClient | None = None) -> ChatClient:
    """A ChatClient on ``url``; with ``like``, the same browser (its cookie and CSRF token)."""
    client = ChatClient(url, timeout=60)
    if like is not None:
        client.http.cookies.update(like.http.cookies)
        client.csrf_token, client.username = like.csrf_token, like.username
    return client


def _user(url: str, name: str | None = None) -> ChatClient:
    client = _client(url)
    name = name or unique_name()
    client.register(name, PASSWORD)
    client.login(name, PASSWORD)
    return client


def _login(url: str, name: str, password: str = WRONG,
           forwarded: str | None = None) -> requests.Response:
    # One connection per login, closed by the server after it answers: a test making many
    # must not keep them open (past MAX_CONNECTIONS_PER_ADDRESS the server refuses more).
    headers = {"Connection": "close"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    return requests.post(url + "/api/login", json={"username": name, "password": password},
                         headers=headers, timeout=120)


def _code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def _no_tracebacks(*processes: Served) -> None:
    """Stop the processes (together: each may wait its grace for idle connections)."""
    for served in processes:
        served.proc.send_signal(signal.SIGTERM)
    for served in processes:
        code, _, err = served.stop()
        assert code == 0 and "Traceback" not in err, err


# --- sessions: any process serves any session ------------------------------------------------


def test_a_session_from_one_process_works_on_the_other(start: Start) -> None:
    a, b = start(), start()
    with _user(a.url, "alice") as on_a, _client(b.url, like=on_a) as on_b:
        conv = on_a.new_conversation("shared")["id"]
        on_a.send(conv, "from A")
        assert on_b.session()["username"] == "alice"
        assert [m["content"] for m in on_b.history(conv)][0] == "from A"
        on_b.send(conv, "from B")
        contents = [m["content"] for m in on_a.history(conv)]
    assert [c for c in contents if c.startswith("from")] == ["from A", "from B"]
    _no_tracebacks(a, b)


def test_logout_on_one_process_revokes_on_the_other(start: Start) -> None:
    a, b = start(), start()
    with _user(a.url, "alice") as on_a, _client(b.url, like=on_a) as on_b:
        assert on_b.session()["username"] == "alice"
        on_b.logout()
        with pytest.raises(ApiError) as ended:
            on_a.session()
    assert ended.value.code == "unauthorized"
    _no_tracebacks(a, b)


# --- login limits count once, wherever the guess lands --------------------------------------


def test_parallel_guesses_across_processes_never_exceed_the_limit(start: Start) -> None:
    # Every password check runs (no 503 for a full KDF queue), so each guess is either
    # counted (401) or refused (429): the 401s are exactly the limit.
    limited = {"SECURECHAT_RATELIMIT_ENABLED": "true",
               "SECURECHAT_LOGIN_RATE_LIMIT": "5 per minute",
               "SECURECHAT_KDF_QUEUE": "64", "SECURECHAT_KDF_MAX_WAIT": "60"}
    a, b = start(**limited), start(**limited)
    urls = [a.url, b.url] * 8
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _login(urls[i], f"guess{i}").status_code,
                                range(16)))
    assert sorted(answers) == [401] * 5 + [429] * 11, answers
    _no_tracebacks(a, b)


def test_a_usernames_budget_is_shared_by_every_process(start: Start) -> None:
    # Behind a proxy each guess comes from another address: only the name's budget binds.
    limited = {"SECURECHAT_RATELIMIT_ENABLED": "true", "SECURECHAT_PROXY_FIX": "1",
               "SECURECHAT_LOGIN_RATE_LIMIT": "3 per minute"}
    a, b = start(**limited), start(**limited)
    answers = [_login((a.url, b.url)[i % 2], "alice", forwarded=f"203.0.113.{i}")
               for i in range(5)]
    assert [r.status_code for r in answers] == [401, 401, 401, 429, 429]
    _no_tracebacks(a, b)


def test_one_login_per_username_at_a_time_across_processes(start: Start, redis_url: str,
                                                           prefix: str) -> None:
    # Alice's key is wrapped at the real cost (scrypt 2^17, ~0.3 s a check): long enough
    # to catch process A inside her login and freeze it there with SIGSTOP.
    a = start(SECURECHAT_KDF_LOG_N="17", SECURECHAT_RATELIMIT_ENABLED="true")
    b = start(SECURECHAT_RATELIMIT_ENABLED="true")
    _client(a.url).register("alice", PASSWORD)
    key = f"{prefix}:lease:login:user:alice"
    watcher = redis.Redis.from_url(redis_url)
    for _ in range(10):
        on_a: list[requests.Response] = []
        thread = threading.Thread(target=_login_into, args=(on_a, a.url, "alice"))
        thread.start()
        while thread.is_alive() and not live_leases(watcher, key):
            pass  # A has not taken alice's lease yet
        os.kill(a.pid, signal.SIGSTOP)
        try:
            caught = live_leases(watcher, key) == 1
            if caught:  # A is frozen inside alice's login, holding her lease
                on_b = _login(b.url, "alice", PASSWORD)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        thread.join(60)
        if caught:
            break
    else:
        pytest.fail("never caught process A inside a login")
    watcher.close()
    assert on_b.status_code == 429 and _code(on_b) == "rate_limited"
    assert "Another login" in on_b.json()["error"]["message"]
    assert on_a[0].status_code == 200
    assert _login(b.url, "alice", PASSWORD).status_code == 200  # the lease came back
    _no_tracebacks(a, b)


def _login_into(answers: list[requests.Response], url: str, name: str) -> None:
    answers.append(_login(url, name, PASSWORD))


# --- replies in progress: a user's cap, wherever the streams run ------------------------------


def _backend(fake: FakeOpenAI, **env: str) -> dict[str, str]:
    return {"SECURECHAT_RESPONDER": "openai", "SECURECHAT_OPENAI_BASE_URL": fake.base_url,
            "SECURECHAT_OPENAI_MODEL": "m", "SECURECHAT_OPENAI_MAX_ATTEMPTS": "1",
            "SECURECHAT_OPENAI_READ_TIMEOUT": "120", **env}


def _wait_for(condition: Callable[[], Any], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.05)


def test_a_users_reply_cap_holds_across_processes(start: Start) -> None:
    with FakeOpenAI(stall_seconds=120) as fake:
        env = _backend(fake, SECURECHAT_MAX_STREAMS_PER_USER="2")
        a, b = start(**env), start(**env)
        with _user(a.url, "alice") as on_a, _client(b.url, like=on_a) as on_b:
            conv = on_a.new_conversation()["id"]
            fake.fail_next("stall", "stall")
            streams = [on_a.stream(conv, "one"), on_b.stream(conv, "two")]
            _wait_for(lambda: len(fake.requests) == 2, "two stalled replies")
            refusals = []
            for client in (on_a, on_b):
                with pytest.raises(ApiError) as refused_here:
                    client.send(conv, "three")
                refusals.append(refused_here.value)
            fake.release()
            for stream in streams:
                with stream:
                    "".join(stream)
            assert on_b.send(conv, "four")["reply"]["content"]
            sent = [m["content"] for m in on_a.history(conv) if m["role"] == "user"]
    assert [(e.status, e.code) for e in refusals] == [(429, "rate_limited")] * 2
    assert sorted(sent) == ["four", "one", "two"]  # a refused message is never stored
    _no_tracebacks(a, b)


def test_a_killed_process_frees_its_slots_when_the_lease_expires(
        start: Start, redis_url: str, prefix: str) -> None:
    with FakeOpenAI(stall_seconds=120) as fake:
        env = _backend(fake, SECURECHAT_MAX_STREAMS_PER_USER="1", SECURECHAT_LEASE_TTL="2")
        a, b = start(**env), start(**env)
        with _user(a.url, "alice") as on_a, _client(b.url, like=on_a) as on_b:
            conv = on_a.new_conversation()["id"]
            fake.fail_next("stall")
            stream = on_a.stream(conv, "held by A")
            _wait_for(lambda: fake.requests, "the stalled reply")
            time.sleep(6)  # three TTLs: A renews its lease meanwhile
            with pytest.raises(ApiError) as held:
                on_b.send(conv, "while A streams")
            assert held.value.status == 429
            a.kill()  # SIGKILL: nothing is released, nothing renewed
            stream.close()
            answers = []
            _wait_for(lambda: answers.append(_try_send(on_b, conv)) or answers[-1] != 429,
                      "the dead process's slot coming back")
            fake.release()
    assert answers[-1] == 201
    keys = redis.Redis.from_url(redis_url).keys(f"{prefix}:lease:streams:*")
    assert all(live_leases(redis_url, k.decode()) == 0 for k in keys)
    _no_tracebacks(b)


def _try_send(client: ChatClient, conv: str) -> int:
    try:
        client.send(conv, "after A died")
    except ApiError as e:
        return e.status
    return 201


# --- writes through both: nothing lost, each sender's order kept -----------------------------


def test_concurrent_sends_through_both_lose_nothing_and_keep_order(start: Start) -> None:
    env = {"SECURECHAT_MAX_STREAMS_PER_USER": "4"}
    a, b = start(**env), start(**env)
    per_sender = 12
    users = [_user(a.url) for _ in range(3)]
    convs = [user.new_conversation()["id"] for user in users]
    # Each user sends from two browsers at once: one through A (JSON), one through B (SSE).
    senders = [(i, side, _client(url, like=user))
               for i, user in enumerate(users) for side, url in (("A", a.url), ("B", b.url))]

    def send_all(sender: tuple[int, str, ChatClient]) -> None:
        i, side, client = sender
        for n in range(per_sender):
            text = f"{side}{i}-{n:02d}"
            if side == "A":
                client.send(convs[i], text)
            else:
                with client.stream(convs[i], text) as reply:
                    "".join(reply)

    with ThreadPoolExecutor(len(senders)) as pool:
        list(pool.map(send_all, senders))
    for i, user in enumerate(users):
        history = user.history(convs[i])
        mine = [m["content"] for m in history if m["role"] == "user"]
        for side in ("A", "B"):
            sent = [f"{side}{i}-{n:02d}" for n in range(per_sender)]
            assert [c for c in mine if c.startswith(side)] == sent  # all there, in order
        replies = [m["content"] for m in history if m["role"] == "assistant"]
        assert len(mine) == len(replies) == 2 * per_sender
        assert all(any(text in reply for reply in replies) for text in mine)
    for _, _, client in senders:
        client.close()
    for user in users:
        user.close()
    _no_tracebacks(a, b)


def test_workers_of_one_serve_share_the_limits(start: Start) -> None:
    served = start(args=("--workers", "2"), SECURECHAT_RATELIMIT_ENABLED="true",
                   SECURECHAT_LOGIN_RATE_LIMIT="3 per minute")
    assert "2 workers" in served.first_line
    answers = [_login(served.url, f"guess{i}").status_code for i in range(6)]
    assert answers == [401, 401, 401, 429, 429, 429]
    _no_tracebacks(served)


# --- Redis failing under serve ---------------------------------------------------------------


@pytest.fixture
def proxy(redis_url: str) -> Iterator[RedisProxy]:
    """The test Redis behind a proxy the test can cut or freeze."""
    fronted = RedisProxy(redis_url)
    yield fronted
    fronted.close()


def test_a_hung_redis_holds_up_no_other_request(start: Start, proxy: RedisProxy) -> None:
    served = start(redis_url=proxy.url, SECURECHAT_RATELIMIT_ENABLED="true",
                   SECURECHAT_LEASE_TTL="6")
    _client(served.url).register("alice", PASSWORD)
    proxy.freeze()
    pending: list[requests.Response] = []
    login = threading.Thread(target=lambda: pending.append(
        _login(served.url, "alice", PASSWORD)))
    login.start()
    _wait_for(lambda: proxy.held_back, "the login waiting on Redis")
    # The login waits on Redis in its greenlet; the event loop serves everyone else.
    health = [requests.get(served.url + "/api/health", timeout=10).status_code
              for _ in range(5)]
    still_waiting = login.is_alive()
    login.join(60)
    proxy.restore()
    assert health == [200] * 5 and still_waiting
    assert pending[0].status_code == 503 and _code(pending[0]) == "unavailable"
    assert pending[0].headers["Retry-After"] == "5"
    # The login lease that timed out may still reach Redis late (it was on its way): until
    # the server deletes it, alice's logins are "in progress"; then they work again.
    after: list[requests.Response] = []
    _wait_for(lambda: after.append(_login(served.url, "alice", PASSWORD)) or
              after[-1].status_code != 429, "logins working again")
    assert after[-1].status_code == 200
    assert all("Another login" in r.json()["error"]["message"] for r in after[:-1])
    code, _, err = served.stop()
    assert code == 0 and "Traceback" not in err, err
    assert "the rate-limit store failed (TimeoutError) on POST /api/login" in err


def test_redis_down_under_serve_refuses_in_json_then_recovers(start: Start,
                                                               proxy: RedisProxy) -> None:
    served = start(redis_url=proxy.url, SECURECHAT_RATELIMIT_ENABLED="true")
    with _user(served.url, "alice") as alice:
        conv = alice.new_conversation()["id"]
        proxy.cut()
        answers = [_login(served.url, "alice", PASSWORD)]
        for call in (lambda: alice.send(conv, "down"), lambda: alice.stream(conv, "down")):
            with pytest.raises(ApiError) as refused_here:
                call()
            answers.append(refused_here.value)
        proxy.restore()
        assert alice.send(conv, "up")["reply"]["content"]
        sent = [m["content"] for m in alice.history(conv) if m["role"] == "user"]
    assert answers[0].status_code == 503 and _code(answers[0]) == "unavailable"
    assert [(e.status, e.code) for e in answers[1:]] == [(503, "unavailable")] * 2
    assert sent == ["up"]
    code, _, err = served.stop()
    assert code == 0 and "Traceback" not in err, err


def test_serve_refuses_to_start_without_its_redis(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = serve_env(SECURECHAT_RATELIMIT_STORAGE_URI=f"redis://:hunter2-pw@127.0.0.1:{port}/0")
    proc = refused(tmp_path / "instance", env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("securechat: refusing to start: ")
    assert f"Redis at 127.0.0.1:{port}/0 does not answer" in lines[0]
    assert "hunter2" not in proc.stderr + proc.stdout


