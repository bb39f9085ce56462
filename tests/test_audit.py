"""The security log's chain and `python -m securechat audit verify` (SQLite).

Each test tampers with the files the way someone with a copy of the database could, then
runs the real command: an altered, deleted (middle or newest), reordered or re-chained
event must be reported, and an untouched log must verify.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from securechat import create_app, store

from .helpers import FAST, PASSWORD, AuthActions, unique_name
from .served import serve_env


def audit(instance: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real audit command on the instance (``env``: more SECURECHAT_ settings)."""
    return subprocess.run([sys.executable, "-m", "securechat", "audit", "verify",
                           "--instance", str(instance)],
                          capture_output=True, text=True, env=serve_env(**env), timeout=120)


@pytest.fixture
def logged(instance: Path) -> tuple[Path, str]:
    """An instance where one user has five events and another has two."""
    app = create_app(FAST, instance_path=str(instance))
    name = unique_name("audited")
    auth = AuthActions(app.test_client())
    assert auth.register(name).status_code == 201
    auth.login(name)                                  # 1 login
    failed = auth.http.post("/api/login", json={"username": name, "password": "not it!!"})
    assert failed.status_code == 401                  # 2 login_failed
    auth.login(name)                                  # 3 login
    auth.logout()                                     # 4 logout
    auth.login(name)                                  # 5 login
    other = AuthActions(app.test_client())
    other.register("bystander")
    other.login("bystander")
    other.logout()
    return instance, name


def sql(instance: Path, statement: str, *args: Any) -> None:
    """Change the database the way someone with the file could."""
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db, db:
        db.execute(statement, args)


def user_id(instance: Path, name: str) -> str:
    """The stored id of ``name``."""
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db:
        return str(db.execute("SELECT id FROM users WHERE username = ?", (name,)).fetchone()[0])


def test_an_untouched_log_verifies(logged: tuple[Path, str]) -> None:
    instance, _ = logged
    done = audit(instance)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == \
        "securechat audit: 2 accounts, 7 events, 0 problems"


def test_the_events_are_the_ones_that_happened(logged: tuple[Path, str]) -> None:
    instance, name = logged
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db:
        types = [row[0] for row in db.execute(
            "SELECT type FROM events WHERE user_id = ? ORDER BY seq", (user_id(instance, name),))]
    assert types == ["login", "login_failed", "login", "logout", "login"]


@pytest.mark.parametrize(("tamper", "reported"), [
    ("UPDATE events SET type = 'logout' WHERE user_id = ? AND seq = 2",
     "event 2 (logout) was altered"),
    ("UPDATE events SET at = '2020-01-01T00:00:00Z' WHERE user_id = ? AND seq = 3",
     "event 3 (login) was altered"),
    ("UPDATE events SET details = NULL WHERE user_id = ? AND seq = 1",
     "event 1 (login) was altered"),
    ("DELETE FROM events WHERE user_id = ? AND seq = 2",
     "event 2 is missing (the next is 3)"),
    ("DELETE FROM events WHERE user_id = ? AND seq = 5",
     "the log holds 4 events but the account says 5"),
    ("UPDATE users SET event_mac = zeroblob(32) WHERE id = ?",
     "the log's last event does not match the account's"),
])
def test_tampering_is_reported(logged: tuple[Path, str], tamper: str, reported: str) -> None:
    instance, name = logged
    sql(instance, tamper, user_id(instance, name))
    done = audit(instance)
    assert done.returncode == 1
    assert f"securechat audit: {name}: {reported}" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == \
        "securechat audit: 2 accounts, " + \
        f"{6 if tamper.startswith('DELETE') else 7} events, 1 problem"


def test_deleting_the_newest_event_and_moving_the_head_back_is_reported(
        logged: tuple[Path, str]) -> None:
    """Hiding the last login: drop it and point the user row at event 4, minus the secret."""
    instance, name = logged
    uid = user_id(instance, name)
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db, db:
        mac4 = db.execute("SELECT mac FROM events WHERE user_id = ? AND seq = 4",
                          (uid,)).fetchone()[0]
        db.execute("DELETE FROM events WHERE user_id = ? AND seq = 5", (uid,))
        db.execute("UPDATE users SET event_count = 4, event_mac = ? WHERE id = ?", (mac4, uid))
    done = audit(instance)
    assert done.returncode == 1
    assert f"{name}: the log's last event does not match the account's" in done.stdout


def test_a_chain_rebuilt_without_the_secret_is_reported(logged: tuple[Path, str]) -> None:
    """Someone rewrites event 2 and recomputes every MAC after it with a key of their own."""
    instance, name = logged
    uid = user_id(instance, name)
    from securechat.server import eventlog

    forged_key = hashlib.sha256(b"not the server secret").digest()
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db, db:
        db.execute("UPDATE events SET type = 'login' WHERE user_id = ? AND seq = 2", (uid,))
        previous = b""
        rows = db.execute("SELECT seq, type, at, details FROM events WHERE user_id = ?"
                          " ORDER BY seq", (uid,)).fetchall()
        for seq, type_, at, details in rows:
            previous = eventlog.mac(forged_key, uid, previous, seq, type_, at, details)
            db.execute("UPDATE events SET mac = ? WHERE user_id = ? AND seq = ?",
                       (previous, uid, seq))
        db.execute("UPDATE users SET event_mac = ? WHERE id = ?", (previous, uid))
    done = audit(instance)
    assert done.returncode == 1
    assert f"{name}: event 1 (login) was altered, or the chain was rebuilt" in done.stdout
    # The MAC is an HMAC under a key derived from the secret, not a bare hash of the row.
    assert not hmac.compare_digest(previous, hashlib.sha256(previous).digest())


def test_an_instance_that_cannot_be_opened_is_exit_2(tmp_path: Path) -> None:
    instance = tmp_path / "damaged"
    instance.mkdir(mode=0o700)
    (instance / "securechat.sqlite3").write_bytes(b"this is not a database" * 100)
    (instance / "securechat.sqlite3").chmod(0o600)
    done = audit(instance)
    assert done.returncode == 2
    assert done.stderr.startswith("securechat: cannot audit:")
    assert PASSWORD not in done.stdout + done.stderr


def test_audit_reads_the_same_settings_as_serve_postgres(postgres_url: str,
                                                        tmp_path: Path) -> None:
    """With SECURECHAT_DATABASE naming PostgreSQL, the chains there are checked."""
    instance = tmp_path / "pg-instance"
    app = create_app({**FAST, "DATABASE": postgres_url}, instance_path=str(instance))
    auth = AuthActions(app.test_client())
    auth.register("pgaudited")
    auth.login("pgaudited")
    auth.login("pgaudited")
    app.extensions["securechat.db"].close()
    done = audit(instance, SECURECHAT_DATABASE=postgres_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == \
        "securechat audit: 1 account, 2 events, 0 problems"
    with closing(store.connect(postgres_url)) as db:
        db.execute("UPDATE events SET type = 'logout' WHERE seq = 1")
    done = audit(instance, SECURECHAT_DATABASE=postgres_url)
    assert done.returncode == 1
    assert "securechat audit: pgaudited: event 1 (logout) was altered" in done.stdout
