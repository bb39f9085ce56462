"""Retention: unstarred conversations idle for a user's N days are deleted, on a schedule
and at login; starred ones and other users' stay. The clock is injected (``CLOCK``)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import create_app, protocol
from securechat.server import maintenance

from .fake_backend import wait_for
from .helpers import FAST, PASSWORD, AuthActions, open_database
from .served import Served, serve_env

pytestmark = pytest.mark.every_store

DAY = 86400.0
MONTH = 31 * 86400  # the longest session timeouts allowed


class Clock:
    """A settable clock for the app (``CLOCK``)."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_app(settings: dict[str, Any], instance: Path, clock: Clock) -> Iterator[Flask]:
    app = create_app({**settings, "CLOCK": clock, "SESSION_IDLE_TIMEOUT": MONTH,
                      "SESSION_ABSOLUTE_TIMEOUT": MONTH}, instance_path=instance)
    yield app
    app.extensions["securechat.db"].close()


def titles(auth: AuthActions) -> list[str]:
    return sorted(c["title"] for c in auth.conversations())


def keep_for(auth: AuthActions, days: int | None) -> None:
    response = auth.http.patch("/api/account/settings", json={"retention_days": days},
                               headers=auth.csrf)
    assert response.status_code == 200, response.text


def test_the_sweep_deletes_unstarred_conversations_idle_too_long(
        timed_app: Flask, clock: Clock) -> None:
    alice = AuthActions(timed_app.test_client())
    alice.signup("alice")
    keep_for(alice, 30)
    old = alice.new_conversation("old")["id"]
    alice.send(old, "from long ago")
    starred = alice.new_conversation("starred")["id"]
    alice.http.patch(f"/api/conversations/{starred}", json={"starred": True},
                     headers=alice.csrf)
    clock.now += 20 * DAY
    active = alice.new_conversation("active")["id"]
    alice.send(active, "recent")
    # bob keeps everything forever: his old conversation stays.
    bob = AuthActions(timed_app.test_client())
    clock.now -= 20 * DAY
    bob.signup("bob")
    bob.new_conversation("bob's old")
    clock.now += 20 * DAY

    clock.now += 11 * DAY  # "old" and "starred" are 31 days idle, "active" 11
    assert maintenance.purge(timed_app) == 1
    assert titles(alice) == ["active", "starred"]
    assert titles(bob) == ["bob's old"]
    assert maintenance.purge(timed_app) == 0  # idempotent
    with open_database(timed_app) as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                          (old,)).fetchone()[0] == 0


def test_a_new_message_keeps_a_conversation(timed_app: Flask, clock: Clock) -> None:
    alice = AuthActions(timed_app.test_client())
    alice.signup()
    keep_for(alice, 7)
    conv = alice.new_conversation("talked about")["id"]
    clock.now += 6 * DAY
    alice.send(conv, "still here")
    clock.now += 6 * DAY
    maintenance.purge(timed_app)
    assert titles(alice) == ["talked about"]
    clock.now += 1.5 * DAY
    maintenance.purge(timed_app)
    assert titles(alice) == []


def test_renaming_or_starring_does_not_count_as_activity(timed_app: Flask,
                                                         clock: Clock) -> None:
    alice = AuthActions(timed_app.test_client())
    alice.signup()
    keep_for(alice, 1)
    conv = alice.new_conversation("idle")["id"]
    clock.now += 2 * DAY
    alice.http.patch(f"/api/conversations/{conv}", json={"title": "renamed"},
                     headers=alice.csrf)
    maintenance.purge(timed_app)
    assert titles(alice) == []


def test_retention_applies_at_login(timed_app: Flask, clock: Clock) -> None:
    alice = AuthActions(timed_app.test_client())
    alice.signup()
    keep_for(alice, 2)
    alice.new_conversation("stale")
    clock.now += 3 * DAY
    alice.login()  # no sweep has run: the login applies it
    assert titles(alice) == []


def test_keep_forever_deletes_nothing(timed_app: Flask, clock: Clock) -> None:
    alice = AuthActions(timed_app.test_client())
    alice.signup()
    keep_for(alice, 3)
    keep_for(alice, None)
    alice.new_conversation("kept")
    clock.now += 3650 * DAY
    maintenance.purge(timed_app)  # (it ends alice's session, long idle)
    alice.login()
    assert titles(alice) == ["kept"]


def test_serve_sweeps_on_its_own_schedule(tmp_path: Path, database: str | None) -> None:
    """The real server, idle, deletes an expired conversation within PURGE_INTERVAL."""
    extra = {"SECURECHAT_DATABASE": database} if database else {}
    server = Served(tmp_path / "instance", serve_env(SECURECHAT_PURGE_INTERVAL="1", **extra))
    try:
        http = requests.Session()
        body = {"username": "keeper", "password": PASSWORD}
        http.post(server.url + "/api/register", json=body, timeout=30)
        token = http.post(server.url + "/api/login", json=body, timeout=30).json()["csrf_token"]
        headers = {protocol.CSRF_HEADER: token}
        http.patch(server.url + "/api/account/settings", json={"retention_days": 1},
                   headers=headers, timeout=30)
        conv = http.post(server.url + "/api/conversations", json={"title": "aged"},
                         headers=headers, timeout=30).json()["id"]
        # Age it by two days in the database itself: the server's clock is the real one.
        two_days_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z",
                                     time.gmtime(time.time() - 2 * DAY))
        target = database or str(tmp_path / "instance" / "securechat.sqlite3")
        from securechat import store

        with closing(store.connect(target)) as db:
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                       (two_days_ago, conv))

        def gone() -> bool:
            with closing(store.connect(target)) as db:
                return db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0

        wait_for(gone, timeout=20)  # no request made: the server's own loop swept
        assert http.get(server.url + "/api/conversations", timeout=30).json()[
            "conversations"] == []
    finally:
        status, _, err = server.stop()
    assert status == 0, err


def test_settings_out_of_range_are_400(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    for bad in (0, 3651, -1, "30", 1.5, True):
        response = auth.http.patch("/api/account/settings", json={"retention_days": bad},
                                   headers=auth.csrf)
        assert response.status_code == 400, bad


def test_the_sweep_scrubs_the_files(tmp_path: Path, clock: Clock) -> None:
    """SQLite: the deleted conversation's ciphertext leaves every file, WAL included."""
    instance = tmp_path / "scrubbed"
    app = create_app({**FAST, "CLOCK": clock, "SESSION_IDLE_TIMEOUT": MONTH,
                      "SESSION_ABSOLUTE_TIMEOUT": MONTH}, instance_path=instance)
    alice = AuthActions(app.test_client())
    alice.signup()
    keep_for(alice, 1)
    conv = alice.new_conversation("to go")["id"]
    alice.send(conv, "soon gone")
    with closing(sqlite3.connect(app.config["DATABASE"])) as db:
        sealed = [row[0] for row in db.execute("SELECT content FROM messages")]
    clock.now += 2 * DAY
    assert maintenance.purge(app) == 1
    every = b"".join(p.read_bytes() for p in instance.iterdir() if p.is_file())
    assert sealed and not any(blob in every for blob in sealed)
    app.extensions["securechat.db"].close()
