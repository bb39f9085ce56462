"""Server-side sessions: cookie flags, CSRF, revocation, timeouts, forged cookies, KDF work."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import BackgroundServer, ChatClient, create_app, crypto
from securechat.lab.vulnerable import PUBLISHED_SECRET, forge_session_cookie

from .conftest import FAST, PASSWORD
from .test_api import assert_error, csrf, raw

COOKIE = "securechat_session"


def set_cookie_header(client: ChatClient, username: str) -> str:
    response = raw(client, "POST", "/api/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200
    return response.headers["Set-Cookie"]


def test_cookie_flags_on_plain_http(client: ChatClient) -> None:
    client.register("gina", PASSWORD)
    header = set_cookie_header(client, "gina")
    parts = [p.strip().lower() for p in header.split(";")]
    assert parts[0].startswith(COOKIE + "=")
    assert "httponly" in parts and "samesite=lax" in parts and "path=/" in parts
    assert "secure" not in parts  # plain http on 127.0.0.1 must keep working


def test_cookie_flags_with_https(instance: Path) -> None:
    app = create_app({**FAST, "HTTPS": True}, instance_path=instance)
    web = app.test_client()
    web.post("/api/register", json={"username": "hana", "password": PASSWORD})
    response = web.post(
        "/api/login", json={"username": "hana", "password": PASSWORD}, base_url="https://localhost"
    )
    header = response.headers["Set-Cookie"]
    parts = [p.strip().lower() for p in header.split(";")]
    assert header.startswith("__Host-securechat=")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(parts)
    assert not any(p.startswith("domain=") for p in parts)  # __Host- forbids Domain
    assert "Strict-Transport-Security" in response.headers
    session = web.get("/api/session", base_url="https://localhost")
    assert session.status_code == 200 and session.json["username"] == "hana"


STATE_CHANGES = [
    ("POST", "/api/conversations", {}),
    ("POST", "/api/conversations/{id}/messages", {"content": "hi"}),
    ("POST", "/api/conversations/{id}/reply", {}),
    ("DELETE", "/api/conversations/{id}", None),
    ("POST", "/api/logout", {}),
]


@pytest.mark.parametrize("method,path,body", STATE_CHANGES)
@pytest.mark.parametrize("token", [None, "", "wrong", "x" * 43])
def test_state_change_without_valid_csrf_is_403(
    alice: ChatClient, method: str, path: str, body: Any, token: str | None
) -> None:
    conv = alice.new_conversation("kept")
    headers = {} if token is None else {"X-CSRF-Token": token}
    response = raw(alice, method, path.format(id=conv["id"]), json=body, headers=headers)
    assert_error(response, 403, "csrf_failed")
    # Nothing changed: the conversation and the session are still there, untouched.
    assert [c["id"] for c in alice.conversations()] == [conv["id"]]
    assert alice.history(conv["id"]) == []


def test_csrf_token_of_another_session_is_refused(alice: ChatClient, bob: ChatClient) -> None:
    response = raw(alice, "POST", "/api/conversations", json={}, headers=csrf(bob))
    assert_error(response, 403, "csrf_failed")


def test_logout_revokes_replayed_cookie(
    alice: ChatClient, make_client: Callable[[], ChatClient]
) -> None:
    cookie = alice.http.cookies.get(COOKIE)
    thief = make_client()
    thief.http.cookies.set(COOKIE, cookie)
    assert raw(thief, "GET", "/api/session").status_code == 200  # the copy works while live
    alice.logout()
    assert_error(raw(thief, "GET", "/api/session"), 401)
    assert_error(raw(thief, "GET", "/api/conversations"), 401)


def test_login_revokes_the_earlier_session(make_client: Callable[[], ChatClient]) -> None:
    c = make_client()
    c.register("ivan", PASSWORD)
    c.login("ivan", PASSWORD)
    first = c.http.cookies.get(COOKIE)
    c.login("ivan", PASSWORD)
    second = c.http.cookies.get(COOKIE)
    assert first != second
    old = make_client()
    old.http.cookies.set(COOKIE, first)
    assert_error(raw(old, "GET", "/api/session"), 401)
    assert raw(c, "GET", "/api/session").status_code == 200


def test_two_devices_have_independent_sessions(make_client: Callable[[], ChatClient]) -> None:
    phone, laptop = make_client(), make_client()
    phone.register("judy", PASSWORD)
    phone.login("judy", PASSWORD)
    laptop.login("judy", PASSWORD)
    conv = phone.new_conversation("shared")
    phone.send(conv["id"], "from phone")
    assert [m["content"] for m in laptop.history(conv["id"])][0] == "from phone"
    phone.logout()
    assert laptop.session()["username"] == "judy"


class FakeClock:
    """An injectable clock (the app reads CLOCK from its config)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings: dict[str, Any]) -> FakeClock:
    fake = FakeClock()
    settings.update(CLOCK=fake, SESSION_IDLE_TIMEOUT=100, SESSION_ABSOLUTE_TIMEOUT=1000)
    return fake


def test_idle_timeout_enforced(clock: FakeClock, alice: ChatClient) -> None:
    clock.now += 90
    assert alice.session()["username"] == "alice"  # activity resets the idle timer
    clock.now += 90
    assert alice.conversations() == []
    clock.now += 101
    assert_error(raw(alice, "GET", "/api/conversations"), 401, "session_expired")
    # Expired means deleted: going back in time does not revive it.
    clock.now -= 101
    assert_error(raw(alice, "GET", "/api/conversations"), 401, "unauthorized")


def test_absolute_timeout_enforced_despite_activity(clock: FakeClock, alice: ChatClient) -> None:
    for _ in range(10):
        clock.now += 90
        assert alice.conversations() == []
    clock.now += 90  # 990 s of activity, then past 1000 s since login
    clock.now += 20
    assert_error(raw(alice, "GET", "/api/conversations"), 401, "session_expired")


@pytest.fixture
def short_idle(settings: dict[str, Any]) -> None:
    settings["SESSION_IDLE_TIMEOUT"] = 1


def test_real_idle_timeout_with_short_setting(
    short_idle: None, make_user: Callable[..., ChatClient]
) -> None:
    import time

    user = make_user()
    assert user.conversations() == []
    time.sleep(1.3)
    assert_error(raw(user, "GET", "/api/conversations"), 401, "session_expired")


def test_cookie_forged_with_published_secret_is_rejected(
    alice: ChatClient, make_client: Callable[[], ChatClient]
) -> None:
    forged = forge_session_cookie(PUBLISHED_SECRET, {"user_id": "alice", "username": "alice"})
    attacker = make_client()
    for name in (COOKIE, "session", "__Host-securechat"):
        attacker.http.cookies.set(name, forged)
    assert_error(raw(attacker, "GET", "/api/session"), 401)
    assert_error(raw(attacker, "GET", "/api/conversations"), 401)


def test_cookie_with_tampered_signature_is_rejected(
    alice: ChatClient, make_client: Callable[[], ChatClient]
) -> None:
    token, _, signature = alice.http.cookies.get(COOKIE).rpartition(".")
    attacker = make_client()
    for bad in (token, token + ".AAAA", "x" + token[1:] + "." + signature):
        attacker.http.cookies.set(COOKIE, bad)
        assert_error(raw(attacker, "GET", "/api/session"), 401)


def test_database_and_secret_cannot_mint_a_session(
    app: Flask, alice: ChatClient, server: BackgroundServer
) -> None:
    """With the database and the server secret, an attacker still lacks a live token."""
    import sqlite3

    from itsdangerous import Signer

    signer = Signer(app.config["SECRET_KEY"], salt="securechat.session-cookie")
    with closing(sqlite3.connect(app.config["DATABASE"])) as db, db:
        hashes = [row[0] for row in db.execute("SELECT token_hash FROM sessions")]
    assert hashes
    for digest in hashes:
        for guess in (digest.hex(), crypto.new_token()):
            cookie = signer.sign(guess).decode()
            r = requests.get(server.url + "/api/session", cookies={COOKIE: cookie}, timeout=30)
            assert_error(r, 401)


def test_unknown_user_and_wrong_password_do_the_same_kdf_work(
    client: ChatClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.register("kate", PASSWORD)
    calls: list[crypto.KdfParams] = []
    real = crypto.derive_kek

    def spy(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        calls.append(params)
        return real(password, salt, params)

    monkeypatch.setattr(crypto, "derive_kek", spy)
    for username, password in [("kate", "wrong password"), ("nobody", PASSWORD), ("x", PASSWORD)]:
        before = len(calls)
        assert_error(
            raw(client, "POST", "/api/login", json={"username": username, "password": password}),
            401,
        )
        assert calls[before:] == [crypto.KdfParams(log_n=FAST["KDF_LOG_N"])]


@pytest.fixture
def one_kdf_at_a_time(settings: dict[str, Any]) -> None:
    settings["KDF_CONCURRENCY"] = 1


def test_kdf_runs_are_capped(
    one_kdf_at_a_time: None, make_client: Callable[[], ChatClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of logins never runs more KDFs at once than KDF_CONCURRENCY (memory bound)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    make_client().register("lara", PASSWORD)
    running, peak, lock = 0, 0, threading.Lock()
    real = crypto.derive_kek

    def slow(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)  # long enough for the others to pile up behind the cap
        try:
            return real(password, salt, params)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(crypto, "derive_kek", slow)
    clients = [make_client() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: c.login("lara", PASSWORD), clients))
    assert peak == 1


def test_sessions_expired_while_down_are_purged_at_start(
    clock: FakeClock, app: Flask, alice: ChatClient, instance: Path
) -> None:
    import sqlite3

    def rows() -> int:
        with closing(sqlite3.connect(app.config["DATABASE"])) as db, db:
            return db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    assert rows() == 1
    clock.now += 101  # past the idle timeout, with no request to notice it
    create_app({**FAST, "CLOCK": clock, "SESSION_IDLE_TIMEOUT": 100}, instance_path=instance)
    assert rows() == 0
