"""Limits and caps kept in Redis: leases shared by every process, their TTL, and outages.

Two apps (or two lease stores) on one Redis stand for two processes here; the real
`serve` processes are in ``test_processes.py``. Each test has its own key prefix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from limits.errors import StorageError

from securechat import BackgroundServer, ChatClient, ConfigError, create_app
from securechat.server.leases import PerKey, RedisLeases, connect

from .helpers import COOKIE, FAST, PASSWORD, AuthActions, assert_error
from .redis_helpers import RedisProxy, live_leases

WRONG = "not the password"


@pytest.fixture
def make_leases(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisLeases]]:
    """Lease stores on the test Redis (one per simulated process), closed afterwards."""
    made: list[RedisLeases] = []

    def make(ttl: float = 30.0, url: str = redis_url) -> RedisLeases:
        # The pool the app would use (its timeouts and retries), as one process holds it.
        made.append(RedisLeases(redis.Redis(connection_pool=connect(url)), prefix, ttl))
        return made[-1]

    yield make
    for leases in made:
        leases.close()


@pytest.fixture
def make_app(redis_url: str, prefix: str,
             tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Apps sharing the test Redis, prefix and secret, each on its own instance folder."""
    import secrets

    made: list[Flask] = []
    secret = secrets.token_urlsafe(48)  # as every process of a deployment shares one

    def make(url: str = redis_url, **overrides: Any) -> Flask:
        settings = {**FAST, "RATELIMIT_STORAGE_URI": url, "REDIS_KEY_PREFIX": prefix,
                    "SECRET_KEY": secret, **overrides}
        made.append(create_app(settings, instance_path=tmp_path / f"instance{len(made)}"))
        return made[-1]

    yield make
    for app in made:
        app.extensions["securechat.leases"].close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[RedisProxy]:
    """The test Redis behind a proxy the test can cut or freeze."""
    fronted = RedisProxy(redis_url)
    yield fronted
    fronted.close()


def _login(http: FlaskClient, name: str, password: str = WRONG) -> Any:
    return http.post("/api/login", json={"username": name, "password": password})


# --- leases --------------------------------------------------------------------------------


def test_a_cap_holds_across_lease_stores(make_leases: Callable[..., RedisLeases]) -> None:
    one, other = make_leases().per_key("streams", 2), make_leases().per_key("streams", 2)
    held = [one.acquire("uid:alice"), other.acquire("uid:alice")]
    assert all(held)
    assert one.acquire("uid:alice") is None and other.acquire("uid:alice") is None
    assert other.acquire("uid:bob") is not None  # per key
    held[0].release()
    held[0].release()  # a second release frees nothing more
    again = other.acquire("uid:alice")
    assert again is not None and one.acquire("uid:alice") is None


def test_a_dead_holders_leases_free_themselves(make_leases: Callable[..., RedisLeases],
                                               redis_url: str) -> None:
    dead, alive = make_leases(ttl=1), make_leases(ttl=1)
    caps = dead.per_key("streams", 1)
    assert caps.acquire("uid:alice") is not None
    dead.close()  # the process is gone: nobody releases or renews its lease
    survivor = alive.per_key("streams", 1)
    assert survivor.acquire("uid:alice") is None
    deadline = time.monotonic() + 20
    while (lease := survivor.acquire("uid:alice")) is None:
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.1)
    lease.release()
    assert live_leases(redis_url, caps.redis_key("uid:alice")) == 0


def test_a_held_lease_is_renewed_past_its_ttl(make_leases: Callable[..., RedisLeases]) -> None:
    holder, other = make_leases(ttl=1), make_leases(ttl=1)
    lease = holder.per_key("streams", 1).acquire("uid:alice")
    assert lease is not None
    time.sleep(3)  # three TTLs: without renewal it would have expired twice over
    assert other.per_key("streams", 1).acquire("uid:alice") is None
    lease.release()
    assert other.per_key("streams", 1).acquire("uid:alice") is not None


def test_the_renewer_ends_with_the_last_lease(make_leases: Callable[..., RedisLeases]) -> None:
    import threading

    leases = make_leases(ttl=1)
    lease = leases.per_key("login", 1).acquire("user:alice")
    assert lease is not None
    assert any(t.name == "securechat-lease-renewer" for t in threading.enumerate())
    lease.release()
    deadline = time.monotonic() + 10
    while any(t.name == "securechat-lease-renewer" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the renewer outlived every lease"
        time.sleep(0.05)
    assert leases.held == 0


def test_a_lease_lost_in_redis_is_reported_once(make_leases: Callable[..., RedisLeases],
                                                redis_url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    leases = make_leases(ttl=1)
    caps = leases.per_key("streams", 1)
    lease = caps.acquire("uid:alice")
    assert lease is not None
    redis.Redis.from_url(redis_url).delete(caps.redis_key("uid:alice"))  # flushed, say
    deadline = time.monotonic() + 10
    while leases.held:
        assert time.monotonic() < deadline, "the lost lease was never noticed"
        time.sleep(0.05)
    assert caplog.text.count("expired before it was renewed") == 1
    lease.release()  # still safe


def test_with_redis_down_taking_fails_and_giving_back_does_not(
        make_leases: Callable[..., RedisLeases], proxy: RedisProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    caps = make_leases(url=proxy.url).per_key("streams", 2)
    lease = caps.acquire("uid:alice")
    assert lease is not None
    proxy.cut()
    with pytest.raises(StorageError):
        caps.acquire("uid:alice")
    lease.release()  # never raises: the TTL frees it
    assert "frees itself within LEASE_TTL" in caplog.text


def test_a_take_that_timed_out_is_deleted_when_redis_answers_again(
        make_leases: Callable[..., RedisLeases], proxy: RedisProxy, redis_url: str) -> None:
    caps = make_leases(ttl=9, url=proxy.url).per_key("streams", 1)
    key = caps.redis_key("uid:alice")
    proxy.freeze()
    with pytest.raises(StorageError):
        caps.acquire("uid:alice")  # no answer in time: refused here ...
    proxy.restore()  # ... but the command was on its way, and Redis runs it now
    watcher = redis.Redis.from_url(redis_url)
    _eventually(lambda: watcher.zcard(key) == 1, "the late command landing")
    [(_, expires_ms)] = watcher.zrange(key, 0, -1, withscores=True)
    # Nobody holds that lease: the next round deletes it, well before its TTL would.
    _eventually(lambda: watcher.zcard(key) == 0, "the orphaned lease going")
    seconds, micros = watcher.time()
    assert seconds * 1000 + micros // 1000 < expires_ms, "it went only by expiring"
    watcher.close()


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.02)


def test_in_process_caps_without_redis(tmp_path: Path) -> None:
    app = create_app(FAST, instance_path=tmp_path / "instance")
    assert app.extensions["securechat.leases"] is None
    assert isinstance(app.extensions["securechat.backend_per_user"], PerKey)


# --- the app's limits and caps across two apps on one Redis ----------------------------------


def test_failed_logins_count_across_apps(make_app: Callable[..., Flask]) -> None:
    apps = [make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
            for _ in range(2)]
    answers = [_login(apps[i % 2].test_client(), f"name{i}").status_code for i in range(5)]
    assert answers == [401, 401, 401, 429, 429]


def test_successful_logins_give_their_units_back_with_redis(
        make_app: Callable[..., Flask]) -> None:
    # Redis tells a window's end to the second, and anew each time: a unit must still find
    # its way back (people who log in often must never be blocked).
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
    assert AuthActions(app.test_client()).register().status_code == 201
    for _ in range(5):
        assert _login(app.test_client(), "alice", PASSWORD).status_code == 200
    guesses = [_login(app.test_client(), "alice").status_code for _ in range(4)]
    assert guesses == [401, 401, 401, 429]


def test_one_login_per_username_across_apps(make_app: Callable[..., Flask]) -> None:
    one, other = (make_app(RATELIMIT_ENABLED=True) for _ in range(2))
    assert AuthActions(other.test_client()).register().status_code == 201
    # A login of alice in progress in the first app (its guard holds her lease) ...
    busy = one.extensions["securechat.login_guard"]._busy.acquire("user:alice")
    assert busy is not None
    refused = _login(other.test_client(), "alice", PASSWORD)
    assert_error(refused, 429, "rate_limited")
    assert "Another login" in refused.get_json()["error"]["message"]
    busy.release()
    assert _login(other.test_client(), "alice", PASSWORD).status_code == 200


def test_a_users_replies_in_progress_count_across_apps(make_app: Callable[..., Flask],
                                                      tmp_path: Path) -> None:
    database = str(tmp_path / "shared.sqlite3")
    one, other = (make_app(DATABASE=database, MAX_STREAMS_PER_USER=1) for _ in range(2))
    alice = AuthActions(one.test_client())
    alice.signup()
    conv = alice.new_conversation()["id"]
    # Her one slot is taken by a reply in progress on the first app.
    held = one.extensions["securechat.backend_per_user"].acquire(
        "uid:" + _user_id(one, "alice"))
    assert held is not None
    elsewhere = other.test_client()  # the same browser, answered by the other process
    cookie = alice.http.get_cookie(COOKIE)
    assert cookie is not None
    elsewhere.set_cookie(COOKIE, cookie.value)
    refused = elsewhere.post(f"/api/conversations/{conv}/messages", json={"content": "hi"},
                             headers=alice.csrf)
    assert_error(refused, 429, "rate_limited")
    assert alice.history(conv) == []  # refused before anything was stored
    held.release()
    answered = elsewhere.post(f"/api/conversations/{conv}/messages", json={"content": "hi"},
                              headers=alice.csrf)
    assert answered.status_code == 201, answered.text


def _user_id(app: Flask, name: str) -> str:
    from securechat import store

    with app.app_context():
        user = store.find_user(store.get_db(), name)
        assert user is not None
        return user.id


def test_every_stream_gives_its_lease_back(make_app: Callable[..., Flask],
                                           redis_url: str) -> None:
    app = make_app()
    caps = app.extensions["securechat.backend_per_user"]
    with BackgroundServer(app) as server, ChatClient(server.url) as alice:
        alice.register("alice", PASSWORD)
        alice.login("alice", PASSWORD)
        key = caps.redis_key("uid:" + _user_id(app, "alice"))
        conv = alice.new_conversation()["id"]
        assert "hello" in alice.send(conv, "hello")["reply"]["content"]
        with alice.stream(conv, "streamed") as reply:
            assert "streamed" in "".join(reply)
        with alice.stream(conv, "left early") as reply:
            pass  # the client leaves before reading anything
        deadline = time.monotonic() + 10
        while live_leases(redis_url, key):
            assert time.monotonic() < deadline, "a stream kept its lease"
            time.sleep(0.05)


def test_a_failure_after_the_view_gives_the_lease_back(make_app: Callable[..., Flask],
                                                       redis_url: str) -> None:
    app = make_app()

    def broken(response: Any) -> Any:
        if response.mimetype == "text/event-stream":
            raise RuntimeError("a hook failed after the view")
        return response

    app.after_request_funcs.setdefault(None, []).insert(0, broken)
    alice = AuthActions(app.test_client())
    alice.signup()
    conv = alice.new_conversation()["id"]
    failed = alice.http.post(f"/api/conversations/{conv}/messages", json={"content": "x"},
                             headers={**alice.csrf, "Accept": "text/event-stream"})
    assert_error(failed, 500, "internal_error")
    key = app.extensions["securechat.backend_per_user"].redis_key(
        "uid:" + _user_id(app, "alice"))
    assert live_leases(redis_url, key) == 0


# --- Redis down: fail closed, in JSON, without a traceback -----------------------------------


def test_with_redis_down_every_limited_route_answers_503(
        make_app: Callable[..., Flask], proxy: RedisProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(url=proxy.url, RATELIMIT_ENABLED=True)
    alice = AuthActions(app.test_client())
    alice.signup()
    conv = alice.new_conversation()["id"]
    proxy.cut()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answers = {
            "login": _login(app.test_client(), "alice", PASSWORD),
            "register": AuthActions(app.test_client()).register("bob"),
            "send": alice.send(conv, "while Redis is down"),
            "create": alice.http.post("/api/conversations", json={}, headers=alice.csrf),
        }
        health = app.test_client().get("/api/health")
    for name, answer in answers.items():
        assert_error(answer, 503, "unavailable")
        assert answer.headers["Retry-After"] == "5", name
    assert health.status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "an outage logged a traceback"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    proxy.restore()
    assert alice.history(conv) == []  # the refused send stored nothing
    assert _login(app.test_client(), "alice", PASSWORD).status_code == 200
    assert alice.send(conv, "back again").status_code == 201


def test_with_redis_down_a_backend_call_is_refused_before_storing(
        make_app: Callable[..., Flask], proxy: RedisProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(url=proxy.url)  # rate limits off: the per-user cap alone meets Redis
    alice = AuthActions(app.test_client())
    alice.signup()
    conv = alice.new_conversation()["id"]
    proxy.cut()
    for accept in ("application/json", "text/event-stream"):
        refused = alice.http.post(f"/api/conversations/{conv}/messages",
                                  json={"content": "x"}, headers={**alice.csrf,
                                                                  "Accept": accept})
        assert_error(refused, 503, "unavailable")
    assert not [r for r in caplog.records if r.exc_info]
    proxy.restore()
    assert alice.history(conv) == []


def test_redis_failing_between_the_check_and_the_answer_is_no_error(
        make_app: Callable[..., Flask], proxy: RedisProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(url=proxy.url, RATELIMIT_ENABLED=True)

    cuts = [True]

    def redis_goes_down(response: Any) -> Any:
        if cuts:  # once: after the view, before Flask-Limiter reads the limit for its headers
            proxy.cut()
            cuts.clear()
        return response

    app.after_request(redis_goes_down)  # runs before the hooks registered earlier
    answer = AuthActions(app.test_client()).register("bob")
    # Counted before Redis went: the account is made; only the limit's headers are missing.
    assert answer.status_code == 201, answer.text
    assert "X-RateLimit-Limit" not in answer.headers
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "answered without rate-limit headers" in caplog.text
    proxy.restore()
    assert "X-RateLimit-Limit" in AuthActions(app.test_client()).register("carol").headers


# --- settings: checked at start -----------------------------------------------------------


def test_an_unreachable_redis_refuses_to_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    with pytest.raises(ConfigError) as refused:
        create_app({**FAST, "RATELIMIT_STORAGE_URI": url}, instance_path=tmp_path / "i")
    message = str(refused.value)
    assert f"Redis at 127.0.0.1:{port}/0 does not answer" in message
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(("uri", "says"), [
    ("memcached://:hunter2-secret@127.0.0.1:11211", "not a memcached URL"),
    ("redis://:hunter2-secret@/0", "must name a host"),
    ("redis://:hunter2-secret@127.0.0.1:port/0", "port that is not a number"),
    ("redis+unix://", "must name a socket"),
    ("127.0.0.1:6379", "not a scheme-less URL"),
    ("redis://:hunter2-secret@127.0.0.1:6379/notadb", "must end in a database number"),
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "not a usable Redis URL"),
])
def test_a_bad_storage_url_is_refused_without_echoing_it(uri: str, says: str,
                                                         tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        create_app({**FAST, "RATELIMIT_STORAGE_URI": uri}, instance_path=tmp_path / "i")
    assert says in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("override", [{"REDIS_KEY_PREFIX": ""},
                                      {"REDIS_KEY_PREFIX": "has space"},
                                      {"REDIS_KEY_PREFIX": "x" * 65},
                                      {"LEASE_TTL": 0.5}])
def test_bad_lease_settings_are_refused(override: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app({**FAST, **override}, instance_path=tmp_path / "i")
