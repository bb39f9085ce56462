"""The attack lab's attacks, against the tutorial's app (they work) and securechat (refused)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask import Flask

from securechat import ConfigError, create_app, crypto
from securechat.lab.attacks import (
    XSS_PAYLOAD,
    audit_html,
    copy_ciphertext,
    forge_securechat_cookie,
    mask,
    session_cookie_name,
    table,
)
from securechat.lab.vulnerable import PUBLISHED_SECRET, create_tutorial_app, forge_session_cookie

from .helpers import FAST, PASSWORD, AuthActions


@pytest.fixture
def tutorial() -> Flask:
    """The tutorial's app, as written."""
    return create_tutorial_app()


@pytest.fixture
def settings() -> dict[str, Any]:
    """Rate limits on, as deployed (the tests' FAST settings turn them off)."""
    return {**FAST, "RATELIMIT_ENABLED": True}


@pytest.fixture
def user(make_auth: Callable[[], AuthActions]) -> Callable[[str], AuthActions]:
    """A securechat user logged in on their own test client."""

    def make(name: str) -> AuthActions:
        auth = make_auth()
        auth.signup(name)
        return auth

    return make


def send(auth: AuthActions, conv: str, text: str) -> None:
    assert auth.send(conv, text).status_code == 201


# --- 1. a forged session cookie ------------------------------------------------------------


def test_tutorial_accepts_a_cookie_forged_with_the_published_key(tutorial: Flask) -> None:
    http = tutorial.test_client()
    http.set_cookie("session", forge_session_cookie(PUBLISHED_SECRET, {"user_id": "admin"}))
    response = http.get("/whoami")
    assert (response.status_code, response.get_json()) == (200, {"user_id": "admin"})


def test_securechat_refuses_the_published_key(instance: Path) -> None:
    with pytest.raises(ConfigError, match="published"):
        create_app({**FAST, "SECRET_KEY": PUBLISHED_SECRET}, instance_path=instance)


def test_securechat_refuses_forged_cookies(app: Flask, user: Callable[[str], AuthActions]) -> None:
    alice = user("alice")
    name = session_cookie_name(app)
    real = alice.http.get_cookie(name)
    assert real is not None
    with closing(sqlite3.connect(app.config["DATABASE"])) as db:
        (digest,) = db.execute("SELECT token_hash FROM sessions").fetchone()
    forged = {
        "published key": forge_securechat_cookie(app, crypto.new_token(), PUBLISHED_SECRET),
        "real key, random token": forge_securechat_cookie(app, crypto.new_token()),
        "real key, stored hash": forge_securechat_cookie(app, digest.hex()),
        "tutorial-style cookie": forge_session_cookie(PUBLISHED_SECRET, {"user_id": "alice"}),
    }
    for label, cookie in forged.items():
        attacker = app.test_client()
        attacker.set_cookie(name, cookie)
        response = attacker.get("/api/session")
        assert response.status_code == 401, label
        assert response.get_json()["error"]["code"] == "unauthorized"
    # Control: the forging is faithful; with the real key and the live token it is accepted.
    token = real.value.rsplit(".", 1)[0]
    assert forge_securechat_cookie(app, token) == real.value
    copy = app.test_client()
    copy.set_cookie(name, forge_securechat_cookie(app, token))
    assert copy.get("/api/session").get_json()["username"] == "alice"


# --- 2. login without a password ----------------------------------------------------------


def test_tutorial_logs_anyone_in_without_a_password(tutorial: Flask) -> None:
    http = tutorial.test_client()
    assert http.post("/login", json={"username": "alice"}).get_json() == {"success": True}
    assert http.get("/whoami").get_json() == {"user_id": "alice"}


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"username": "alice"}, 400, "invalid_field"),
    ({"username": "alice", "password": None}, 400, "invalid_field"),
    ({"username": "alice", "password": ""}, 401, "invalid_credentials"),
    ({"username": "alice", "password": "a guess!"}, 401, "invalid_credentials"),
    ({"username": "nobody", "password": PASSWORD}, 401, "invalid_credentials"),
])
def test_securechat_needs_the_password(app: Flask, user: Callable[[str], AuthActions],
                                       body: dict[str, Any], status: int, code: str) -> None:
    user("alice")
    attacker = app.test_client()
    response = attacker.post("/api/login", json=body)
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)
    assert "Set-Cookie" not in response.headers
    assert attacker.get("/api/session").status_code == 401


# --- 3. stored XSS -------------------------------------------------------------------------


def test_tutorial_page_would_run_the_payload(tutorial: Flask) -> None:
    http = tutorial.test_client()
    http.post("/login", json={"username": "mallory"})
    assert http.post("/chat", json={"message": XSS_PAYLOAD}).status_code == 200
    page = http.get("/")
    html = page.get_data(as_text=True)
    assert XSS_PAYLOAD in html  # verbatim, inside the inline script
    assert "Content-Security-Policy" not in page.headers  # nothing stops inline script
    findings = audit_html(html)
    assert "line 5: inline <script> body" in findings
    assert any("innerHTML" in f for f in findings)


def test_securechat_keeps_the_payload_text(user: Callable[[str], AuthActions]) -> None:
    mallory = user("mallory")
    http, conv = mallory.http, mallory.new_conversation()["id"]
    send(mallory, conv, XSS_PAYLOAD)
    response = http.get(f"/api/conversations/{conv}/messages")
    assert response.get_json()["messages"][0]["content"] == XSS_PAYLOAD  # data, not markup
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page = http.get("/")
    html = page.get_data(as_text=True)
    page.close()
    assert XSS_PAYLOAD not in html and audit_html(html) == []


# --- 4. ciphertext moved between records ---------------------------------------------------


def test_tutorial_accepts_a_moved_ciphertext(tutorial: Flask) -> None:
    http = tutorial.test_client()
    http.post("/login", json={"username": "alice"})
    http.post("/chat", json={"message": "transfer 10 coins to bob"})
    http.post("/chat", json={"message": "cancel the transfer"})
    stored = tutorial.extensions["tutorial"]["messages"]
    stored[1] = stored[0]  # an attacker with write access to the storage
    cipher: Fernet = tutorial.extensions["tutorial"]["cipher"]
    assert cipher.decrypt(stored[1]) == b"transfer 10 coins to bob"  # Fernet cannot tell
    html = http.get("/").get_data(as_text=True)
    assert "cancel the transfer" not in html
    assert html.count("transfer 10 coins to bob") == 2


def assert_integrity_error(response: Any, plaintext: str) -> None:
    """The tampered record is refused as a JSON 500, and none of its plaintext leaks."""
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "integrity_error"
    assert plaintext not in response.get_data(as_text=True)


def test_securechat_refuses_a_ciphertext_moved_within_a_conversation(
        app: Flask, user: Callable[[str], AuthActions]) -> None:
    alice = user("alice")
    http, conv = alice.http, alice.new_conversation()["id"]
    send(alice, conv, "transfer 10 coins to bob")  # positions 0 (user) and 1 (reply)
    send(alice, conv, "cancel the transfer")  # positions 2 and 3
    assert http.get(f"/api/conversations/{conv}/messages").status_code == 200
    copy_ciphertext(app.config["DATABASE"], (conv, 0), (conv, 2))
    assert_integrity_error(http.get(f"/api/conversations/{conv}/messages"), "transfer")


def test_securechat_refuses_a_ciphertext_moved_to_another_user(
        app: Flask, user: Callable[[str], AuthActions]) -> None:
    alice, bob = user("alice"), user("bob")
    alice_conv, bob_conv = alice.new_conversation()["id"], bob.new_conversation()["id"]
    send(alice, alice_conv, "alice's secret")
    send(bob, bob_conv, "hello")
    copy_ciphertext(app.config["DATABASE"], (alice_conv, 0), (bob_conv, 0))
    assert_integrity_error(bob.http.get(f"/api/conversations/{bob_conv}/messages"), "secret")


def test_copy_ciphertext_needs_both_records(app: Flask,
                                            user: Callable[[str], AuthActions]) -> None:
    alice = user("alice")
    conv = alice.new_conversation()["id"]
    send(alice, conv, "hi")
    with pytest.raises(LookupError):
        copy_ciphertext(app.config["DATABASE"], (conv, 7), (conv, 0))
    with pytest.raises(LookupError):
        copy_ciphertext(app.config["DATABASE"], (conv, 0), (conv, 7))


# --- 5. guessing passwords ------------------------------------------------------------------


def test_tutorial_has_no_password_to_guess(tutorial: Flask) -> None:
    http = tutorial.test_client()
    for _ in range(20):
        assert http.post("/login", json={"username": "alice"}).status_code == 200


def test_securechat_stops_guessing_at_the_default_limit(
        app: Flask, user: Callable[[str], AuthActions]) -> None:
    user("alice")
    attacker = app.test_client()
    statuses = [attacker.post("/api/login", json={"username": "alice", "password": f"guess{i}!"})
                .status_code for i in range(7)]
    assert statuses == [401] * 5 + [429] * 2  # LOGIN_RATE_LIMIT: 5 per minute
    right = attacker.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert right.status_code == 429 and "Retry-After" in right.headers


# --- reporting helpers ------------------------------------------------------------------


def test_mask_shows_only_a_prefix() -> None:
    assert mask("eyJ1c2VyX2lkIjoiYWRtaW4ifQ") == "eyJ1…"
    assert mask("abcdef", 2) == "ab…"
    assert mask("abc") == "…"


def test_table_aligns_columns() -> None:
    text = table([("a", "bb"), ("ccc", "d")], header=("x", "y"))
    assert text.splitlines() == ["x   | y", "----+---", "a   | bb", "ccc | d"]


def test_cookie_name_follows_https(instance: Path) -> None:
    assert session_cookie_name(create_app({**FAST, "HTTPS": True}, instance_path=instance)) \
        == "__Host-securechat"


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.20", "203.0.113.5", "::ffff:1.2.3.4"])
def test_the_vulnerable_example_refuses_every_address_but_loopback(tutorial: Flask,
                                                                    address: str) -> None:
    http = tutorial.test_client()
    for method, path in (("GET", "/"), ("POST", "/login"), ("GET", "/whoami")):
        response = http.open(path, method=method, json={"username": "x"},
                             environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 403 and "only answers 127.0.0.1" in response.text
    assert http.get("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert http.get("/", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
