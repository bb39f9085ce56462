"""Your data, your keys: every row of DESIGN's account table, and each way it can fail."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from securechat import create_app, recovery, store
from securechat.protocol import CSRF_HEADER
from securechat.server import keys
from securechat.store import postgres

from .helpers import PASSWORD, assert_error, open_database

pytestmark = pytest.mark.every_store

NEW = "a brand new passphrase"


class Person:
    """One browser of a user on the test client, keeping the session's CSRF token."""

    def __init__(self, app: Flask) -> None:
        self.http: FlaskClient = app.test_client()
        self.token = ""

    @property
    def csrf(self) -> dict[str, str]:
        return {CSRF_HEADER: self.token}

    def register(self, name: str = "alice", password: str = PASSWORD) -> str:
        response = self.http.post("/api/register", json={"username": name,
                                                         "password": password})
        assert response.status_code == 201, response.text
        return str(response.get_json()["recovery_code"])

    def login(self, name: str = "alice", password: str = PASSWORD) -> TestResponse:
        response = self.http.post("/api/login", json={"username": name, "password": password})
        if response.status_code == 200:
            self.token = response.get_json()["csrf_token"]
        return response

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.http.open(path, method=method, json=body, headers=self.csrf, **kwargs)

    def alive(self) -> bool:
        return self.http.get("/api/session").status_code == 200


@pytest.fixture
def alice(app: Flask) -> tuple[Person, str]:
    """alice, registered (her first recovery code) and logged in."""
    person = Person(app)
    code = person.register()
    assert person.login().status_code == 200
    return person, code


def _rows(app: Flask, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with open_database(app) as db:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in db.execute(sql, args).fetchall()]


TABLES = ("users", "sessions", "conversations", "messages", "events")


def _every_byte(app: Flask, instance: Path) -> bytes:
    """What is stored: every byte of every instance file (SQLite, WAL included), or, on
    PostgreSQL (whose files are the server's), every value of every row of every table."""
    if not postgres.is_url(app.config["DATABASE"]):
        return b"".join(p.read_bytes() for p in sorted(instance.rglob("*")) if p.is_file())
    values = [value for table in TABLES
              for row in _rows(app, f"SELECT * FROM {table}") for value in row]  # noqa: S608
    return b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


# --- password change ---------------------------------------------------------------------


def test_password_change_rewraps_keeps_history_and_ends_other_sessions(
        app: Flask, instance: Path, alice: tuple[Person, str]) -> None:
    person, first_code = alice
    conv = person.call("POST", "/api/conversations", {"title": "kept"}).get_json()["id"]
    person.call("POST", f"/api/conversations/{conv}/messages", {"content": "still here"})
    laptop = Person(app)
    assert laptop.login().status_code == 200
    before = _rows(app, "SELECT content FROM messages ORDER BY position")
    old_wrap = _rows(app, "SELECT salt, wrapped_key, recovery_wrap FROM users")[0]

    changed = person.call("POST", "/api/account/password",
                          {"current_password": PASSWORD, "new_password": NEW})
    assert changed.status_code == 200
    new_code = changed.get_json()["recovery_code"]
    recovery.parse_code(new_code)
    assert new_code != first_code
    # Not one message was touched: the same ciphertext, byte for byte.
    assert _rows(app, "SELECT content FROM messages ORDER BY position") == before
    assert person.alive() and not laptop.alive()  # this session stays, the other ends
    assert Person(app).login(password=PASSWORD).status_code == 401
    again = Person(app)
    assert again.login(password=NEW).status_code == 200
    messages = again.call("GET", f"/api/conversations/{conv}/messages").get_json()["messages"]
    assert messages[0]["content"] == "still here"
    # The old wrap and the old recovery wrap are in no file of the instance.
    blob = _every_byte(app, instance)
    assert all(part not in blob for part in old_wrap)
    # The old recovery code died with the old password.
    assert _recover(app, first_code, "yet another passphrase").status_code == 401
    assert _recover(app, new_code, "yet another passphrase").status_code == 200


def test_a_wrong_current_password_is_401_and_the_session_stays(
        alice: tuple[Person, str]) -> None:
    person, _ = alice
    response = person.call("POST", "/api/account/password",
                           {"current_password": "not it at all", "new_password": NEW})
    assert_error(response, 401, "invalid_credentials")
    assert person.alive()
    assert person.login(password=PASSWORD).status_code == 200  # nothing changed


@pytest.mark.parametrize(("body", "code"), [
    ({"current_password": PASSWORD, "new_password": "short"}, "invalid_password"),
    ({"current_password": PASSWORD, "new_password": "x" * 1025}, "invalid_password"),
    ({"current_password": PASSWORD}, "invalid_field"),
    ({"new_password": NEW}, "invalid_field"),
    ({"current_password": 5, "new_password": NEW}, "invalid_field"),
])
def test_bad_password_change_requests_are_400(alice: tuple[Person, str], body: dict[str, Any],
                                              code: str) -> None:
    person, _ = alice
    response = person.call("POST", "/api/account/password", body)
    assert_error(response, 400, code)
    if code == "invalid_password":
        assert "8 to 1024 characters" in response.get_json()["error"]["message"]


def test_account_routes_need_a_session_and_the_csrf_header(app: Flask,
                                                           alice: tuple[Person, str]) -> None:
    person, _ = alice
    stranger = Person(app)
    for method, path, body in [("POST", "/api/account/password",
                                {"current_password": PASSWORD, "new_password": NEW}),
                               ("POST", "/api/account/recovery-code", {"password": PASSWORD}),
                               ("GET", "/api/account/sessions", None),
                               ("DELETE", "/api/account/sessions", None),
                               ("GET", "/api/account/events", None),
                               ("PATCH", "/api/account/settings", {"retention_days": 5}),
                               ("DELETE", "/api/account", {"password": PASSWORD})]:
        assert_error(stranger.call(method, path, body), 401, "unauthorized")
        if method != "GET":
            response = person.http.open(path, method=method, json=body)  # no CSRF header
            assert_error(response, 403, "csrf_failed")
    assert person.alive()


def test_a_wrong_password_on_an_account_route_counts_as_a_failed_login(
        settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "3 per minute"},
                     instance_path=instance)
    person = Person(app)
    person.register()
    person.login()
    for _ in range(3):
        assert person.call("POST", "/api/account/recovery-code",
                           {"password": "wrong guess"}).status_code == 401
    limited = person.call("POST", "/api/account/recovery-code", {"password": PASSWORD})
    assert_error(limited, 429, "rate_limited")
    assert person.alive()


def test_concurrent_password_changes_one_wins_the_other_is_refused(
        app: Flask, alice: tuple[Person, str], monkeypatch: pytest.MonkeyPatch) -> None:
    person, _ = alice
    other = Person(app)
    assert other.login().status_code == 200
    real = keys.wrap_recovery
    first_read, go = threading.Event(), threading.Event()

    def slow_first(*args: Any, **kwargs: Any) -> tuple[bytes, bytes]:
        # The first change has read the keys' version; hold it (outside any transaction)
        # until the second change has committed.
        if not first_read.is_set():
            first_read.set()
            go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(keys, "wrap_recovery", slow_first)
    results: dict[str, int] = {}

    def change(who: Person, name: str, new: str) -> None:
        results[name] = who.call("POST", "/api/account/password",
                                 {"current_password": PASSWORD, "new_password": new}).status_code

    first = threading.Thread(target=change, args=(person, "first", "first new passphrase"))
    first.start()
    assert first_read.wait(10)
    change(other, "second", "second new passphrase")
    go.set()
    first.join(10)
    assert results == {"second": 200, "first": 409}
    # Never half re-wrapped: exactly the winner's password opens the account.
    assert Person(app).login(password="second new passphrase").status_code == 200
    assert Person(app).login(password="first new passphrase").status_code == 401


def test_a_crash_between_the_steps_leaves_the_account_as_it_was(
        app: Flask, alice: tuple[Person, str], monkeypatch: pytest.MonkeyPatch) -> None:
    person, code = alice

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(store.accounts, "delete_other_sessions", crash)
    response = person.call("POST", "/api/account/password",
                           {"current_password": PASSWORD, "new_password": NEW})
    assert_error(response, 500, "internal_error")
    monkeypatch.undo()
    # Everything or nothing: the old password and the old recovery code still open it.
    assert Person(app).login(password=NEW).status_code == 401
    assert Person(app).login(password=PASSWORD).status_code == 200
    assert _recover(app, code, NEW).status_code == 200


# --- recovery codes ----------------------------------------------------------------------


def _recover(app: Flask, code: str, new: str, name: str = "alice",
             **kwargs: Any) -> TestResponse:
    return app.test_client().post("/api/account/recover", json={
        "username": name, "recovery_code": code, "new_password": new}, **kwargs)


def test_recovery_sets_a_new_password_keeps_history_and_is_single_use(
        app: Flask, alice: tuple[Person, str]) -> None:
    person, code = alice
    conv = person.call("POST", "/api/conversations", {"title": "before"}).get_json()["id"]
    person.call("POST", f"/api/conversations/{conv}/messages", {"content": "remember me"})
    response = _recover(app, code.lower().replace("-", " "), NEW)  # as typed by a person
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"username", "csrf_token", "recovery_code"}
    assert body["recovery_code"] != code and "securechat_session" in response.headers[
        "Set-Cookie"]
    assert not person.alive()  # every earlier session ended
    again = Person(app)
    assert again.login(password=NEW).status_code == 200
    messages = again.call("GET", f"/api/conversations/{conv}/messages").get_json()["messages"]
    assert messages[0]["content"] == "remember me"
    assert_error(_recover(app, code, "one more passphrase"), 401, "invalid_credentials")
    assert _recover(app, body["recovery_code"], "one more passphrase").status_code == 200


def test_unknown_user_and_wrong_code_get_the_same_answer(app: Flask,
                                                         alice: tuple[Person, str]) -> None:
    other = recovery.new_code()
    wrong = _recover(app, other, NEW)
    unknown = _recover(app, other, NEW, name="nobody")
    invalid = _recover(app, other, NEW, name="x")
    assert wrong.status_code == unknown.status_code == invalid.status_code == 401
    assert wrong.get_json() == unknown.get_json() == invalid.get_json()


@pytest.mark.parametrize("typo", ["flip-last", "too-short", "foreign", "empty"])
def test_a_typo_is_a_400_before_any_lookup(app: Flask, alice: tuple[Person, str], typo: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, code = alice
    bad = {"flip-last": code[:-1] + ("0" if code[-1] != "0" else "1"),
           "too-short": code[:-5], "foreign": code[:-2] + "!!", "empty": ""}[typo]
    from securechat.server import keys

    def no_lookup(*args: Any) -> Any:
        raise AssertionError("a mistyped code reached the database")

    monkeypatch.setattr(keys, "unlock_with_code", no_lookup)
    assert_error(_recover(app, bad, NEW), 400, "invalid_recovery_code")


def test_a_recovery_code_is_never_a_password(app: Flask, alice: tuple[Person, str]) -> None:
    _, code = alice
    assert Person(app).login(password=code).status_code == 401
    missing = app.test_client().post("/api/account/recover", json={
        "username": "alice", "recovery_code": code})
    assert_error(missing, 400, "invalid_field")


def test_recovery_has_rate_limits_of_its_own(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "RATELIMIT_ENABLED": True,
                      "RECOVERY_RATE_LIMIT": "2 per hour", "LOGIN_RATE_LIMIT": "2 per hour"},
                     instance_path=instance)
    Person(app).register()
    for _ in range(2):
        assert _recover(app, recovery.new_code(), NEW).status_code == 401
    assert_error(_recover(app, recovery.new_code(), NEW), 429, "rate_limited")
    assert Person(app).login().status_code == 200  # logins count apart


def test_new_recovery_code_replaces_the_old_one(app: Flask, alice: tuple[Person, str]) -> None:
    person, code = alice
    assert_error(person.call("POST", "/api/account/recovery-code", {"password": "no no no"}),
                 401, "invalid_credentials")
    assert person.alive()
    response = person.call("POST", "/api/account/recovery-code", {"password": PASSWORD})
    fresh = response.get_json()["recovery_code"]
    assert response.status_code == 200 and fresh != code
    assert _recover(app, code, NEW).status_code == 401
    assert _recover(app, fresh, NEW).status_code == 200


# --- sessions -----------------------------------------------------------------------------


def test_sessions_are_listed_by_opaque_id_with_sealed_details(
        app: Flask, instance: Path, alice: tuple[Person, str]) -> None:
    person, _ = alice
    phone = Person(app)
    agent = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"
    phone.http.environ_base.update(HTTP_USER_AGENT=agent, REMOTE_ADDR="198.51.100.7")
    assert phone.login().status_code == 200
    listed = person.call("GET", "/api/account/sessions").get_json()["sessions"]
    assert [s["current"] for s in listed] == [False, True]  # newest first: the phone
    assert set(listed[0]) == {"id", "created_at", "last_seen", "current", "label", "address"}
    assert listed[0]["label"] == "Chrome on Android" and listed[0]["address"] == "198.51.100.7"
    stored = _rows(app, "SELECT token_hash FROM sessions")
    assert all(s["id"] not in (row[0].hex(),) for s in listed for row in stored)
    blob = _every_byte(app, instance)
    assert b"198.51.100.7" not in blob and b"Android" not in blob  # sealed at rest
    # Revoke the phone from the laptop.
    assert person.call("DELETE", f"/api/account/sessions/{listed[0]['id']}").status_code == 204
    assert not phone.alive() and person.alive()
    assert_error(person.call("DELETE", f"/api/account/sessions/{listed[0]['id']}"), 404)


def test_another_users_session_id_is_not_found(app: Flask, alice: tuple[Person, str]) -> None:
    person, _ = alice
    bob = Person(app)
    bob.register("bob")
    bob.login("bob")
    bobs = bob.call("GET", "/api/account/sessions").get_json()["sessions"][0]["id"]
    assert_error(person.call("DELETE", f"/api/account/sessions/{bobs}"), 404, "not_found")
    assert bob.alive()


def test_revoking_every_other_session(app: Flask, alice: tuple[Person, str]) -> None:
    person, _ = alice
    others = [Person(app) for _ in range(3)]
    for other in others:
        assert other.login().status_code == 200
    assert person.call("DELETE", "/api/account/sessions").status_code == 204
    assert person.alive() and not any(o.alive() for o in others)
    assert len(person.call("GET", "/api/account/sessions").get_json()["sessions"]) == 1


# --- the security log ---------------------------------------------------------------------


def test_the_security_log_records_metadata_newest_first(app: Flask, instance: Path) -> None:
    person = Person(app)
    person.register()
    person.http.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert person.login(password="wrong one!").status_code == 401
    assert person.login().status_code == 200
    conv = person.call("POST", "/api/conversations", {"title": "secret title"}).get_json()["id"]
    person.call("POST", f"/api/conversations/{conv}/messages", {"content": "secret words"})
    person.call("PATCH", "/api/account/settings", {"retention_days": 30})
    events = person.call("GET", "/api/account/events").get_json()
    assert [e["type"] for e in events["events"]] == ["settings_changed", "login", "login_failed"]
    assert events["next_before"] is None
    login = events["events"][1]
    assert login["address"] == "203.0.113.9" and set(login) == {"type", "at", "address"}
    assert "address" not in events["events"][2]  # no key to seal it with: not kept
    text = str(events)
    assert "secret" not in text
    assert b"203.0.113.9" not in _every_byte(app, instance)


def test_the_security_log_pages(app: Flask, alice: tuple[Person, str]) -> None:
    person, _ = alice
    for _ in range(4):
        person.call("PATCH", "/api/account/settings", {"retention_days": None})
    first = person.call("GET", "/api/account/events?limit=3").get_json()
    rest = person.call("GET", f"/api/account/events?limit=3&before={first['next_before']}"
                       ).get_json()
    types = [e["type"] for e in first["events"] + rest["events"]]
    assert types == ["settings_changed"] * 4 + ["login"] and rest["next_before"] is None
    assert_error(person.call("GET", "/api/account/events?limit=0"), 400, "invalid_query")
    assert_error(person.call("GET", "/api/account/events?before=x"), 400, "invalid_query")


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("days", [None, 1, 30, 3650])
def test_retention_setting_accepts_null_or_1_to_3650(alice: tuple[Person, str],
                                                      days: int | None) -> None:
    person, _ = alice
    response = person.call("PATCH", "/api/account/settings", {"retention_days": days})
    assert response.status_code == 200 and response.get_json() == {"retention_days": days}
    assert person.call("GET", "/api/account/settings").get_json() == {"retention_days": days}


@pytest.mark.parametrize("body", [{"retention_days": 0}, {"retention_days": 3651},
                                  {"retention_days": "30"}, {"retention_days": True},
                                  {"retention_days": 1.5}, {}, {"colour": "blue"},
                                  {"retention_days": 5, "colour": "blue"}])
def test_bad_settings_are_400(alice: tuple[Person, str], body: dict[str, Any]) -> None:
    person, _ = alice
    assert_error(person.call("PATCH", "/api/account/settings", body), 400, "invalid_field")


# --- deleting the account -----------------------------------------------------------------


def test_deleting_the_account_leaves_nothing_of_it_in_any_file(
        app: Flask, instance: Path, alice: tuple[Person, str]) -> None:
    person, code = alice
    other = Person(app)
    other.register("bob")
    conv = person.call("POST", "/api/conversations", {"title": "gone soon"}).get_json()["id"]
    person.call("POST", f"/api/conversations/{conv}/messages", {"content": "gone soon"})
    assert_error(person.call("DELETE", "/api/account", {"password": "not mine!"}), 401)
    assert person.alive()
    keys = _rows(app, "SELECT salt, wrapped_key, recovery_salt, recovery_wrap, id FROM users"
                      " WHERE username = 'alice'")[0]
    sealed = [row[0] for row in _rows(app, "SELECT content FROM messages")]
    sealed += [row[0] for row in _rows(app, "SELECT wrapped_key FROM sessions")]
    response = person.call("DELETE", "/api/account", {"password": PASSWORD})
    assert response.status_code == 204
    assert "securechat_session=;" in response.headers["Set-Cookie"]
    assert not person.alive()
    for table in ("users", "sessions", "conversations", "messages", "events"):
        column = "id" if table == "users" else "user_id"
        if table == "messages":
            continue
        assert _rows(app, f"SELECT COUNT(*) FROM {table} WHERE {column} = ?",  # noqa: S608
                     keys[4]) == [(0,)]
    assert _rows(app, "SELECT COUNT(*) FROM messages") == [(0,)]
    blob = _every_byte(app, instance)
    leftovers = [p.hex()[:8] for p in [*keys[:4], *sealed] if p and p in blob]
    assert leftovers == [] and b"alice" not in blob
    assert Person(app).login().status_code == 401
    assert _recover(app, code, NEW).status_code == 401
    assert Person(app).register() != code  # the name is free again
    assert Person(app).login("bob").status_code == 200  # and bob untouched



def test_events_appended_at_once_over_several_connections_take_distinct_numbers(
        app: Flask, alice: tuple[Person, str]) -> None:
    """Two processes recording for one user at once (two logins) never take one number twice."""
    with open_database(app) as db:
        user_id, before = db.execute("SELECT id, event_count FROM users WHERE username = ?",
                                     ("alice",)).fetchone()
    barrier = threading.Barrier(6)

    def append(_: int) -> list[int]:
        # A connection of its own: what another process has (its own pool, its own lock).
        db = store.connect(app.config["DATABASE"])
        try:
            barrier.wait()
            return [store.events.append_event(db, user_id, "login", "2026-01-01T00:00:00Z",
                                              lambda seq: None,
                                              lambda previous, seq, *_: previous + b"|%d" % seq,
                                              lambda count, last: last)
                    for _ in range(5)]
        finally:
            db.close()

    with ThreadPoolExecutor(6) as pool:
        taken = sorted(n for numbers in pool.map(append, range(6)) for n in numbers)
    assert taken == list(range(before + 1, before + 31))
    with open_database(app) as db:
        rows = db.execute("SELECT seq, mac FROM events WHERE user_id = ? AND seq > ?"
                          " ORDER BY seq", (user_id, before)).fetchall()
    # Each event chains onto the one before it: none was computed from a stale head.
    assert [bytes(mac).rsplit(b"|", 1)[1] for _, mac in rows] == [
        b"%d" % seq for seq, _ in rows]
    assert all(bytes(rows[i][1]).startswith(bytes(rows[i - 1][1])) for i in range(1, len(rows)))
