"""Server-side sessions: cookie flags, CSRF, revocation, timeouts, forged cookies, KDF work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from securechat import ChatClient, create_app, crypto
from securechat.lab.vulnerable import PUBLISHED_SECRET, forge_session_cookie

from .helpers import COOKIE, FAST, PASSWORD, AuthActions, assert_error, open_database

# The contract holds on either database.
pytestmark = pytest.mark.every_store


def cookie_parts(header: str) -> list[str]:
    return [p.strip().lower() for p in header.split(";")]


def test_cookie_flags_on_plain_http(http: FlaskClient, auth: AuthActions) -> None:
    auth.register("gina")
    response = http.post("/api/login", json={"username": "gina", "password": PASSWORD})
    assert response.status_code == 200
    parts = cookie_parts(response.headers["Set-Cookie"])
    assert parts[0].startswith(COOKIE + "=")
    assert "httponly" in parts and "samesite=lax" in parts and "path=/" in parts
    assert "secure" not in parts  # plain http on 127.0.0.1 must keep working


@pytest.fixture
def https(settings: dict[str, Any]) -> None:
    settings["HTTPS"] = True


def test_cookie_flags_with_https(https: None, http: FlaskClient, auth: AuthActions) -> None:
    auth.register("hana")
    response = http.post(
        "/api/login", json={"username": "hana", "password": PASSWORD}, base_url="https://localhost"
    )
    header = response.headers["Set-Cookie"]
    parts = cookie_parts(header)
    assert header.startswith("__Host-securechat=")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(parts)
    assert not any(p.startswith("domain=") for p in parts)  # __Host- forbids Domain
    assert "Strict-Transport-Security" in response.headers
    session = http.get("/api/session", base_url="https://localhost")
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
    http: FlaskClient, auth: AuthActions, method: str, path: str, body: Any, token: str | None
) -> None:
    auth.signup()
    conv = auth.new_conversation("kept")
    headers = {} if token is None else {"X-CSRF-Token": token}
    response = http.open(path.format(id=conv["id"]), method=method, json=body, headers=headers)
    assert_error(response, 403, "csrf_failed")
    # Nothing changed: the conversation and the session are still there, untouched.
    assert [c["id"] for c in auth.conversations()] == [conv["id"]]
    assert auth.history(conv["id"]) == []


def test_csrf_token_of_another_session_is_refused(
    http: FlaskClient, auth: AuthActions, make_auth: Callable[[], AuthActions]
) -> None:
    auth.signup("alice")
    bob = make_auth()
    response = http.post("/api/conversations", json={}, headers=bob.signup("bob"))
    assert_error(response, 403, "csrf_failed")


def test_logout_revokes_replayed_cookie(app: Flask, auth: AuthActions) -> None:
    auth.signup("alice")
    cookie = auth.http.get_cookie(COOKIE)
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie.value)
    assert thief.get("/api/session").status_code == 200  # the copy works while live
    assert auth.logout().status_code == 204
    assert_error(thief.get("/api/session"), 401)
    assert_error(thief.get("/api/conversations"), 401)


def test_login_revokes_the_earlier_session(app: Flask, http: FlaskClient,
                                           auth: AuthActions) -> None:
    auth.signup("ivan")
    first = http.get_cookie(COOKIE).value
    auth.login("ivan")
    second = http.get_cookie(COOKIE).value
    assert first != second
    old = app.test_client()
    old.set_cookie(COOKIE, first)
    assert_error(old.get("/api/session"), 401)
    assert http.get("/api/session").status_code == 200


def test_two_devices_have_independent_sessions(
    make_auth: Callable[[], AuthActions]
) -> None:
    phone, laptop = make_auth(), make_auth()
    phone.signup("judy")
    laptop.login("judy")
    conv = phone.new_conversation("shared")
    assert phone.send(conv["id"], "from phone").status_code == 201
    assert laptop.history(conv["id"])[0] == "from phone"
    assert phone.logout().status_code == 204
    assert laptop.http.get("/api/session").get_json()["username"] == "judy"


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


def test_idle_timeout_enforced(clock: FakeClock, http: FlaskClient, auth: AuthActions) -> None:
    auth.signup("alice")
    clock.now += 90
    # Activity resets the idle timer.
    assert http.get("/api/session").get_json()["username"] == "alice"
    clock.now += 90
    assert auth.conversations() == []
    clock.now += 101
    assert_error(http.get("/api/conversations"), 401, "session_expired")
    # Expired means deleted: going back in time does not revive it.
    clock.now -= 101
    assert_error(http.get("/api/conversations"), 401, "unauthorized")


def test_absolute_timeout_enforced_despite_activity(clock: FakeClock, http: FlaskClient,
                                                    auth: AuthActions) -> None:
    auth.signup()
    for _ in range(10):
        clock.now += 90
        assert auth.conversations() == []
    clock.now += 90  # 990 s of activity, then past 1000 s since login
    clock.now += 20
    assert_error(http.get("/api/conversations"), 401, "session_expired")


@pytest.fixture
def short_idle(settings: dict[str, Any]) -> None:
    settings["SESSION_IDLE_TIMEOUT"] = 1


def test_real_idle_timeout_with_short_setting(short_idle: None, http: FlaskClient,
                                              auth: AuthActions) -> None:
    import time

    auth.signup()
    assert auth.conversations() == []
    time.sleep(1.3)
    assert_error(http.get("/api/conversations"), 401, "session_expired")


def test_cookie_forged_with_published_secret_is_rejected(app: Flask, auth: AuthActions) -> None:
    auth.signup("alice")
    forged = forge_session_cookie(PUBLISHED_SECRET, {"user_id": "alice", "username": "alice"})
    attacker = app.test_client()
    for name in (COOKIE, "session", "__Host-securechat"):
        attacker.set_cookie(name, forged)
    assert_error(attacker.get("/api/session"), 401)
    assert_error(attacker.get("/api/conversations"), 401)


def test_cookie_with_tampered_signature_is_rejected(app: Flask, auth: AuthActions) -> None:
    auth.signup("alice")
    token, _, signature = auth.http.get_cookie(COOKIE).value.rpartition(".")
    attacker = app.test_client()
    other = "y" if token[0] == "x" else "x"  # a token that starts with x must change too
    for bad in (token, token + ".AAAA", other + token[1:] + "." + signature):
        attacker.set_cookie(COOKIE, bad)
        assert_error(attacker.get("/api/session"), 401)


def test_database_and_secret_cannot_mint_a_session(app: Flask, auth: AuthActions) -> None:
    """With the database and the server secret, an attacker still lacks a live token."""
    from itsdangerous import Signer

    auth.signup("alice")
    signer = Signer(app.config["SECRET_KEY"], salt="securechat.session-cookie")
    with open_database(app) as db:
        hashes = [row[0] for row in db.execute("SELECT token_hash FROM sessions")]
    assert hashes
    for digest in hashes:
        for guess in (digest.hex(), crypto.new_token()):
            attacker = app.test_client()
            attacker.set_cookie(COOKIE, signer.sign(guess).decode())
            assert_error(attacker.get("/api/session"), 401)


def test_unknown_user_and_wrong_password_do_the_same_kdf_work(
    http: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert auth.register("kate").status_code == 201
    calls: list[crypto.KdfParams] = []
    real = crypto.derive_kek

    def spy(password: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        calls.append(params)
        return real(password, salt, params)

    monkeypatch.setattr(crypto, "derive_kek", spy)
    for username, password in [("kate", "wrong password"), ("nobody", PASSWORD), ("x", PASSWORD)]:
        before = len(calls)
        assert_error(
            http.post("/api/login", json={"username": username, "password": password}), 401
        )
        assert calls[before:] == [crypto.KdfParams.argon2id(
            FAST["KDF_ARGON2_MEMORY_KIB"], FAST["KDF_ARGON2_ITERATIONS"])]


@pytest.fixture
def one_kdf_at_a_time(settings: dict[str, Any]) -> None:
    settings["KDF_CONCURRENCY"] = 1


def test_kdf_runs_are_capped(
    one_kdf_at_a_time: None, make_client: Callable[[], ChatClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of logins never runs more KDFs at once than KDF_CONCURRENCY (memory bound)."""
    # Live: each login runs on a server thread of its own, really at the same time.
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
    clock: FakeClock, settings: dict[str, Any], app: Flask, auth: AuthActions, instance: Path
) -> None:
    auth.signup("alice")

    def rows() -> int:
        with open_database(app) as db:
            return db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    assert rows() == 1
    clock.now += 101  # past the idle timeout, with no request to notice it
    # The same database (SQLite file or PostgreSQL schema), started again.
    create_app(settings, instance_path=instance)
    assert rows() == 0
