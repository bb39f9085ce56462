"""Revoked and replaced key material is gone from every byte of every instance file.

With an old cookie and a copy of the instance folder, a session's wrap in the ``-wal``
file opened the user's data key after logout. After each revocation or re-wrap, nothing
of the old material may be found in any file (database, WAL, shm, anything else).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import ApiError, BackgroundServer, ChatClient, create_app

from .fake_backend import wait_for
from .helpers import FAST, PASSWORD
from .served import Served, serve_env


def every_byte(folder: Path) -> bytes:
    """All bytes of every file below ``folder``."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def rows(database: str | Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read rows with a short-lived connection (it must not hold the WAL open)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def session_material(database: str | Path) -> list[bytes]:
    """Every live session's token hash and key wrap."""
    return [value for row in rows(database, "SELECT token_hash, wrapped_key FROM sessions")
            for value in row]


def assert_gone(folder: Path, material: list[bytes]) -> None:
    blob = every_byte(folder)
    assert material and all(len(m) >= 16 for m in material)
    found = [m.hex()[:12] for m in material if m in blob]
    assert not found, f"revoked material still in the instance files: {found}"


def _chat(client: ChatClient, n: int = 3) -> None:
    conv = client.new_conversation("some history")
    for i in range(n):
        client.send(conv["id"], f"message {i}")


# --- under the real server ----------------------------------------------------------------


def test_logout_leaves_nothing_of_the_session_in_any_file(instance: Path) -> None:
    served = Served(instance, serve_env())
    try:
        with ChatClient(served.url) as client:
            client.register("ada", PASSWORD)
            client.login("ada", PASSWORD)
            _chat(client)
            material = session_material(instance / "securechat.sqlite3")
            assert len(material) == 2
            assert all(m in every_byte(instance) for m in material)  # the scan can see it
            client.logout()
            assert_gone(instance, material)  # while the server still runs
    finally:
        assert served.stop()[0] == 0
    assert_gone(instance, material)


# --- every other revocation and re-wrap ---------------------------------------------------


def test_a_login_replacing_an_earlier_session_scrubs_it(app: Flask, instance: Path,
                                                        alice: ChatClient) -> None:
    _chat(alice)
    material = session_material(app.config["DATABASE"])
    alice.login("alice", PASSWORD)  # the same browser logs in again: the old one is revoked
    assert_gone(instance, material)


def test_sessions_past_the_cap_are_scrubbed(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "MAX_SESSIONS_PER_USER": 1}, instance_path=instance)
    with BackgroundServer(app) as server, ChatClient(server.url) as first, \
            ChatClient(server.url) as second:
        first.register("ada", PASSWORD)
        first.login("ada", PASSWORD)
        _chat(first)
        material = session_material(app.config["DATABASE"])
        second.login("ada", PASSWORD)
        assert_gone(instance, material)


def test_an_expired_session_is_scrubbed_when_it_is_refused(settings: dict[str, Any],
                                                           instance: Path) -> None:
    clock = [1_000_000.0]
    app = create_app({**settings, "CLOCK": lambda: clock[0]}, instance_path=instance)
    with BackgroundServer(app) as server, ChatClient(server.url) as client:
        client.register("ada", PASSWORD)
        client.login("ada", PASSWORD)
        material = session_material(app.config["DATABASE"])
        clock[0] += app.config["SESSION_IDLE_TIMEOUT"] + 1
        with pytest.raises(ApiError) as expired:
            client.session()
        assert expired.value.code == "session_expired"
        assert_gone(instance, material)


def test_a_kdf_upgrade_scrubs_the_old_password_wrap(instance: Path) -> None:
    weak = create_app({**FAST, "KDF": "scrypt", "KDF_LOG_N": 10}, instance_path=instance)
    with BackgroundServer(weak) as server, ChatClient(server.url) as client:
        client.register("ada", PASSWORD)
    old = list(rows(weak.config["DATABASE"], "SELECT salt, wrapped_key FROM users")[0])
    del weak
    stronger = create_app({**FAST, "KDF": "scrypt", "KDF_LOG_N": 11}, instance_path=instance)
    with BackgroundServer(stronger) as server, ChatClient(server.url) as client:
        client.login("ada", PASSWORD)
        (kdf,) = rows(stronger.config["DATABASE"], "SELECT kdf FROM users")[0]
        assert kdf == "scrypt$11$8$1"
        assert_gone(instance, old)


def test_a_deleted_conversation_leaves_no_ciphertext_in_any_file(
        app: Flask, instance: Path, alice: ChatClient) -> None:
    conv = alice.new_conversation("to be deleted")
    for i in range(3):
        alice.send(conv["id"], f"gone {i}")
    database = app.config["DATABASE"]
    material = [row[0] for row in rows(database, "SELECT content FROM messages")]
    material += [row[0] for row in rows(database, "SELECT title FROM conversations")]
    alice.delete(conv["id"])
    assert_gone(instance, material)


def test_a_busy_checkpoint_is_retried_in_the_background(app: Flask, instance: Path,
                                                       make_user: Callable[..., ChatClient],
                                                       server: BackgroundServer) -> None:
    alice = make_user("alice")
    _chat(alice)
    material = session_material(app.config["DATABASE"])
    # A reader holding an old snapshot: no checkpoint can finish while it is open.
    reader = sqlite3.connect(app.config["DATABASE"])
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM messages").fetchone()
    try:
        response = requests.post(server.url + "/api/logout", timeout=10,
                                 cookies=alice.http.cookies,
                                 headers={"X-CSRF-Token": alice.csrf_token or ""})
        assert response.status_code == 204  # answered, not held until the reader leaves
        assert any(m in every_byte(instance) for m in material)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    wait_for(lambda: not any(m in every_byte(instance) for m in material))


def test_an_expired_session_nobody_presents_leaves_the_files_of_an_idle_server(
        instance: Path) -> None:
    served = Served(instance, serve_env(SECURECHAT_SESSION_IDLE_TIMEOUT="1",
                                        SECURECHAT_PURGE_INTERVAL="1"))
    try:
        with ChatClient(served.url) as client:
            client.register("ada", PASSWORD)
            client.login("ada", PASSWORD)
            material = session_material(instance / "securechat.sqlite3")
        # Nobody asks anything: the server's own sweep must remove it.
        deadline = time.monotonic() + 20
        while any(m in every_byte(instance) for m in material):
            assert time.monotonic() < deadline, "the expired session stayed in the files"
            time.sleep(0.2)
    finally:
        assert served.stop()[0] == 0


def test_other_servers_sweep_at_the_first_request_after_the_interval(
        settings: dict[str, Any], instance: Path) -> None:
    clock = [1_000_000.0]
    app = create_app({**settings, "CLOCK": lambda: clock[0], "PURGE_INTERVAL": 1,
                      "SESSION_IDLE_TIMEOUT": 10}, instance_path=instance)
    http = app.test_client()
    http.post("/api/register", json={"username": "ada", "password": PASSWORD})
    http.post("/api/login", json={"username": "ada", "password": PASSWORD})
    material = session_material(app.config["DATABASE"])
    clock[0] += 60  # the session has long expired; nobody presents it again
    time.sleep(1.1)
    assert app.test_client().get("/api/health").status_code == 200  # someone else's request
    assert_gone(instance, material)
