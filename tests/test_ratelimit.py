"""Rate limits: login per address and per username, registration per address, chat per user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits.storage import MemoryStorage
from werkzeug.test import TestResponse

from securechat import (
    ApiError,
    BackgroundServer,
    ChatClient,
    ConfigError,
    create_app,
    create_app_from_env,
    crypto,
)
from securechat.settings import Settings

from .helpers import FAST, PASSWORD

WRONG = "not the password"
LIMITED = {
    **FAST,
    "RATELIMIT_ENABLED": True,
    "LOGIN_RATE_LIMIT": "3 per minute",
    "REGISTER_RATE_LIMIT": "3 per minute",
    "CHAT_RATE_LIMIT": "3 per minute",
    "CREATE_RATE_LIMIT": "3 per minute",
    "LOGIN_SUCCESS_RATE_LIMIT": "4 per hour",
}


@pytest.fixture
def settings() -> dict[str, Any]:
    """Rate limiting on, with small limits (the tests' FAST settings turn it off)."""
    return dict(LIMITED)


def from_addr(addr: str) -> dict[str, Any]:
    """Test-client arguments making a request come from ``addr``."""
    return {"environ_base": {"REMOTE_ADDR": addr}}


def register(http: FlaskClient, name: str, addr: str = "10.0.0.1") -> TestResponse:
    return http.post(
        "/api/register", json={"username": name, "password": PASSWORD}, **from_addr(addr)
    )


def login(
    http: FlaskClient, name: str, password: str = PASSWORD, addr: str = "10.0.0.1"
) -> TestResponse:
    return http.post("/api/login", json={"username": name, "password": password}, **from_addr(addr))


def assert_rate_limited(response: TestResponse, window: int = 60) -> None:
    """429 as the contract's JSON error, with Retry-After (within ``window``) and the headers."""
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= window
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response.headers


def test_defaults_limit_login_and_chat() -> None:
    defaults = Settings()
    assert defaults.RATELIMIT_ENABLED is True
    assert defaults.LOGIN_RATE_LIMIT == "5 per minute;100 per hour"
    assert defaults.LOGIN_SUCCESS_RATE_LIMIT == "60 per hour"
    assert defaults.CREATE_RATE_LIMIT == "60 per minute;1000 per day"
    assert defaults.RATELIMIT_STORAGE_URI == "memory://"
    assert defaults.PROXY_FIX == 0


# --- login ------------------------------------------------------------------------------


def test_login_limited_per_address(http: FlaskClient) -> None:
    assert register(http, "alice").status_code == 201
    # Guessing against three different accounts from one address...
    for name in ("bob", "carol", "dave"):
        assert login(http, name, WRONG).status_code == 401
    # ...blocks that address, even with the right password, before the KDF runs.
    assert_rate_limited(login(http, "alice"))
    assert login(http, "alice", addr="10.0.0.2").status_code == 200


def test_login_limited_per_username(http: FlaskClient) -> None:
    assert register(http, "alice").status_code == 201
    # Guessing one account from many addresses (a botnet)...
    for i in range(3):
        assert login(http, "alice", WRONG, addr=f"10.1.0.{i}").status_code == 401
    # ...blocks that account, ignoring case, from any new address,
    assert_rate_limited(login(http, "ALICE", addr="10.2.0.1"))
    # ...but not another account from that address.
    assert register(http, "bob", addr="10.3.0.1").status_code == 201
    assert login(http, "bob", addr="10.2.0.1").status_code == 200


def test_refused_guesses_cost_no_kdf_work(
    http: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        assert login(http, "alice", WRONG).status_code == 401
    calls: list[str] = []
    real = crypto.derive_kek

    def spy(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        calls.append(password)
        return real(password, salt, params)

    monkeypatch.setattr(crypto, "derive_kek", spy)
    for _ in range(5):
        assert_rate_limited(login(http, "alice", WRONG))
    assert calls == []  # refused before the password is hashed: no CPU to burn


def test_successful_logins_are_not_counted_as_failures(http: FlaskClient) -> None:
    assert register(http, "alice").status_code == 201
    for _ in range(4):  # more than the 3 failures allowed, within the 4 successes
        assert login(http, "alice").status_code == 200
    assert login(http, "nobody", WRONG).status_code == 401  # the address is not blocked


def test_successful_logins_have_a_generous_budget_of_their_own(http: FlaskClient) -> None:
    # A loop of good logins (16 accounts doing it froze the KDF queue) ends at the budget.
    assert register(http, "alice").status_code == 201
    for _ in range(4):
        assert login(http, "alice").status_code == 200
    assert_rate_limited(login(http, "alice"), window=3600)
    assert_rate_limited(login(http, "alice", addr="10.7.7.7"), window=3600)  # per account
    assert register(http, "bob", addr="10.3.0.1").status_code == 201
    assert login(http, "bob").status_code == 200


def test_each_password_check_is_counted_when_it_is_made(
    server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel guesses at different usernames from one address: at most the limit runs.

    Counted once answered, all of them passed the check first (12 checks for a limit of 5).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    checks: list[str] = []
    real = crypto.derive_kek
    started = threading.Event()

    def slow(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        checks.append(password)
        started.wait(0.3)  # hold each check open while the others arrive
        return real(password, salt, params)

    monkeypatch.setattr(crypto, "derive_kek", slow)

    def guess(i: int) -> int:
        r = requests.post(server.url + "/api/login", timeout=30,
                          json={"username": f"target{i}", "password": WRONG})
        return r.status_code

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(guess, range(24)))
    assert set(statuses) <= {401, 429, 503}
    assert statuses.count(401) == len(checks) <= 3  # LIMITED: "3 per minute" per address


def test_a_busy_server_does_not_spend_the_login_budget(settings: dict[str, Any],
                                                       instance: Path) -> None:
    # 503 (no KDF slot came free) checked no password: the attempt is given back.
    http = create_app({**settings, "KDF_CONCURRENCY": 1, "KDF_QUEUE": 1, "KDF_MAX_WAIT": 0.01},
                      instance_path=instance).test_client()
    slots = http.application.extensions["securechat.kdf_slots"]
    assert slots.acquire()  # someone else's KDF run holds the only slot
    try:
        for _ in range(5):
            response = login(http, "alice", WRONG)
            assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    finally:
        slots.release()
    for _ in range(3):
        assert login(http, "alice", WRONG).status_code == 401
    assert_rate_limited(login(http, "alice", WRONG))


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice"},
        {"username": 7, "password": WRONG},
        {"username": "x" * 5000, "password": WRONG},
        ["not", "an object"],
    ],
)
def test_malformed_logins_count_too(http: FlaskClient, body: Any) -> None:
    for _ in range(3):
        assert http.post("/api/login", json=body).status_code in (400, 401)
    assert_rate_limited(http.post("/api/login", json=body))


# --- register and chat ---------------------------------------------------------------


def test_register_limited_per_address(http: FlaskClient) -> None:
    for i in range(3):
        assert register(http, f"user{i}").status_code == 201
    assert_rate_limited(register(http, "user3"))
    assert register(http, "user3", addr="10.0.0.2").status_code == 201


def _logged_in(http: FlaskClient, name: str) -> dict[str, str]:
    assert register(http, name, addr=f"10.9.{len(name)}.1").status_code == 201
    return {"X-CSRF-Token": login(http, name).get_json()["csrf_token"]}


def test_chat_limited_per_user(app: Flask) -> None:
    alice, bob = app.test_client(), app.test_client()
    alice_csrf, bob_csrf = _logged_in(alice, "alice"), _logged_in(bob, "bobby")
    conv = alice.post("/api/conversations", json={}, headers=alice_csrf).get_json()["id"]
    path = f"/api/conversations/{conv}/messages"
    for _ in range(3):
        assert alice.post(path, json={"content": "hi"}, headers=alice_csrf).status_code == 201
    assert_rate_limited(alice.post(path, json={"content": "hi"}, headers=alice_csrf))
    # Same address, another user: a budget of their own.
    bob_conv = bob.post("/api/conversations", json={}, headers=bob_csrf).get_json()["id"]
    response = bob.post(
        f"/api/conversations/{bob_conv}/messages", json={"content": "hi"}, headers=bob_csrf
    )
    assert response.status_code == 201


def test_retrying_a_reply_shares_the_chat_budget(app: Flask) -> None:
    http = app.test_client()
    csrf = _logged_in(http, "alice")
    conv = http.post("/api/conversations", json={}, headers=csrf).get_json()["id"]
    assert (
        http.post(
            f"/api/conversations/{conv}/messages", json={"content": "hi"}, headers=csrf
        ).status_code
        == 201
    )
    for _ in range(2):  # nothing to answer, but the backend budget is still spent
        assert http.post(f"/api/conversations/{conv}/reply", headers=csrf).status_code == 409
    assert_rate_limited(
        http.post(f"/api/conversations/{conv}/messages", json={"content": "hi"}, headers=csrf)
    )


def test_creating_conversations_is_limited_per_user(app: Flask) -> None:
    # 2,000 conversations in 3 s was possible; now each user has a budget.
    alice, bob = app.test_client(), app.test_client()
    alice_csrf, bob_csrf = _logged_in(alice, "alice"), _logged_in(bob, "bobby")
    for _ in range(3):
        assert alice.post("/api/conversations", json={}, headers=alice_csrf).status_code == 201
    assert_rate_limited(alice.post("/api/conversations", json={}, headers=alice_csrf))
    assert bob.post("/api/conversations", json={}, headers=bob_csrf).status_code == 201
    assert len(alice.get("/api/conversations").get_json()["conversations"]) == 3


def test_anonymous_sends_are_limited_per_address(http: FlaskClient) -> None:
    for _ in range(3):
        assert http.post("/api/conversations/x/messages", json={}).status_code == 401
    assert_rate_limited(http.post("/api/conversations/x/messages", json={}))


# --- configuration --------------------------------------------------------------------


def test_disabled_means_no_limit(settings: dict[str, Any], instance: Path) -> None:
    settings["RATELIMIT_ENABLED"] = False
    http = create_app(settings, instance_path=instance).test_client()
    for _ in range(10):
        assert login(http, "alice", WRONG).status_code == 401


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, instance: Path) -> None:
    monkeypatch.setenv("SECURECHAT_REGISTER_RATE_LIMIT", "1 per minute")
    overrides = {k: v for k, v in LIMITED.items() if k != "REGISTER_RATE_LIMIT"}
    http = create_app_from_env(overrides, instance_path=instance).test_client()
    assert register(http, "alice").status_code == 201
    assert_rate_limited(register(http, "bob"))


def test_storage_uri_is_used(monkeypatch: pytest.MonkeyPatch, instance: Path) -> None:
    import flask_limiter._extension as extension

    used: list[str] = []

    def fake_storage(uri: str, **options: Any) -> MemoryStorage:
        used.append(uri)
        return MemoryStorage()

    monkeypatch.setattr(extension, "storage_from_string", fake_storage)
    # No Redis is needed to see the URI handed on: the start-up check is skipped here.
    import redis

    from securechat.server import leases

    monkeypatch.setattr(leases, "connect", lambda uri: redis.ConnectionPool())
    app = create_app(
        {**LIMITED, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/3"}, instance_path=instance
    )
    assert used == ["redis://127.0.0.1:6379/3"]
    assert app.extensions["securechat.limiter"].storage is not None


def test_memory_storage_by_default(app: Flask) -> None:
    assert isinstance(app.extensions["securechat.limiter"].storage, MemoryStorage)


@pytest.mark.parametrize(
    "override",
    [
        {"RATELIMIT_STORAGE_URI": "nosuch://127.0.0.1"},
        {"LOGIN_RATE_LIMIT": "lots"},
        {"CHAT_RATE_LIMIT": ""},
        {"PROXY_FIX": -1},
        {"PROXY_FIX": "2"},
        {"PROXY_FIX": True},
    ],
)
def test_bad_settings_refused(override: dict[str, Any], instance: Path) -> None:
    with pytest.raises(ConfigError):
        create_app({**LIMITED, **override}, instance_path=instance)


# --- addresses behind a proxy ----------------------------------------------------------


def _register_via_proxy(http: FlaskClient, name: str, forwarded: str) -> TestResponse:
    return http.post(
        "/api/register",
        json={"username": name, "password": PASSWORD},
        headers={"X-Forwarded-For": forwarded},
        **from_addr("10.0.0.254"),
    )


def test_forwarded_for_is_ignored_without_proxy_fix(http: FlaskClient) -> None:
    # A client cannot dodge the limit by inventing X-Forwarded-For headers.
    for i in range(3):
        assert _register_via_proxy(http, f"user{i}", f"192.0.2.{i}").status_code == 201
    assert_rate_limited(_register_via_proxy(http, "user3", "192.0.2.99"))


def test_proxy_fix_limits_the_forwarded_address(settings: dict[str, Any], instance: Path) -> None:
    settings["PROXY_FIX"] = 1
    http = create_app(settings, instance_path=instance).test_client()
    for i in range(3):
        assert _register_via_proxy(http, f"user{i}", "192.0.2.1").status_code == 201
    assert_rate_limited(_register_via_proxy(http, "user3", "192.0.2.1"))
    # Another client behind the same proxy is counted on its own.
    assert _register_via_proxy(http, "user4", "192.0.2.2").status_code == 201
    # Only the last hop is trusted: a spoofed earlier entry changes nothing.
    assert_rate_limited(_register_via_proxy(http, "user5", "203.0.113.9, 192.0.2.1"))


# --- over real HTTP ---------------------------------------------------------------------


def test_client_sees_rate_limited_error(server: BackgroundServer) -> None:
    with ChatClient(server.url) as client:
        client.register("alice", PASSWORD)
        for _ in range(3):
            with pytest.raises(ApiError) as failed:
                client.login("alice", WRONG)
            assert failed.value.status == 401
        with pytest.raises(ApiError) as limited:
            client.login("alice", PASSWORD)
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")


def test_parallel_guesses_cannot_overshoot_the_login_limit(
    server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failures are counted once answered: parallel guesses must not all slip past the check."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests

    assert (
        requests.post(
            server.url + "/api/register",
            timeout=30,
            json={"username": "alice", "password": PASSWORD},
        ).status_code
        == 201
    )
    real = crypto.derive_kek
    barrier = threading.Event()

    def slow(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        barrier.wait(0.2)  # keep each guess in flight long enough for the others to arrive
        time.sleep(0.02)
        return real(password, salt, params)

    monkeypatch.setattr(crypto, "derive_kek", slow)

    def guess(i: int) -> int:
        r = requests.post(
            server.url + "/api/login",
            timeout=30,
            json={"username": "alice", "password": f"guess {i}"},
        )
        return r.status_code

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(guess, range(24)))
    assert set(statuses) <= {401, 429}
    assert 1 <= statuses.count(401) <= 3  # LIMITED: "3 per minute"


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.4", "198.51.100.4"),
    ("not an address", "not an address"),
    (None, "unknown"),
])
def test_clients_count_as_their_address_or_their_ipv6_64(address: str | None, key: str) -> None:
    from securechat.protocol import client_key

    assert client_key(address) == key


def test_one_ipv6_64_shares_one_login_budget(http: FlaskClient) -> None:
    # A /64 is one subscriber: hopping across its addresses buys no extra guesses.
    for i in range(3):
        assert login(http, f"name{i}", WRONG, addr=f"2001:db8::{i + 1}").status_code == 401
    assert_rate_limited(login(http, "name9", WRONG, addr="2001:db8::ffff:1"))
    assert login(http, "name9", WRONG, addr="2001:db8:0:1::1").status_code == 401  # next /64


def test_a_unit_is_never_given_back_into_a_later_window(http: FlaskClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A login that succeeds after its window rolled over must not credit the next one."""
    from limits.storage import MemoryStorage as Storage

    assert register(http, "alice").status_code == 201
    guard = http.application.extensions["securechat.login_guard"]
    real_window, real_give_back = guard._window, guard._give_back
    rolled = {"over": False}

    def window(limit: Any, key: str) -> float:
        return real_window(limit, key) + (3600.0 if rolled["over"] else 0.0)

    def give_back_later(taken: Any) -> None:
        rolled["over"] = True  # the password check took long: a new window began meanwhile
        real_give_back(taken)

    monkeypatch.setattr(guard, "_window", window)
    monkeypatch.setattr(guard, "_give_back", give_back_later)
    assert login(http, "alice").status_code == 200
    storage: Storage = http.application.extensions["securechat.limiter"].storage
    counts = [v for k, v in storage.storage.items() if "login-failed" in k]
    # Kept as counted (1 per address and per name): a give-back would have made them 0
    # here, and -1 in a window that really had rolled over.
    assert counts == [1, 1]
