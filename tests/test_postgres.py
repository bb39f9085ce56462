"""PostgreSQL as the store: migrations, types at rest, positions from several processes, serve.

The HTTP contract itself runs against PostgreSQL in the modules marked ``every_store``;
these are the properties only PostgreSQL (or several processes) can show.
"""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from securechat import ChatClient, create_app, store
from securechat.errors import ConfigError
from securechat.protocol import CONTENT_TYPE

from .fake_backend import wait_for
from .helpers import COOKIE, FAST, PASSWORD, AuthActions, open_database
from .served import Served, refused, serve_env


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Any]:
    """A handle on the test's own (empty) PostgreSQL schema."""
    db = store.connect(postgres_url)
    yield db
    db.close()


def _version(db: Any) -> int:
    return db.execute("SELECT version FROM securechat_schema").fetchone()[0]


# --- migrations -------------------------------------------------------------------------------


def test_migrate_from_empty_is_idempotent_and_records_the_version(pg: Any) -> None:
    assert store.migrate(pg) == 0
    assert _version(pg) == store.SCHEMA_VERSION
    assert store.migrate(pg) == store.SCHEMA_VERSION
    assert pg.execute("SELECT COUNT(*) FROM securechat_schema").fetchone()[0] == 1


def test_a_newer_schema_is_refused_at_start(pg: Any, postgres_url: str, tmp_path: Path) -> None:
    store.migrate(pg)
    pg.execute("UPDATE securechat_schema SET version = ?", (store.SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer"):
        create_app({**FAST, "DATABASE": postgres_url}, instance_path=tmp_path / "instance")
    assert _version(pg) == store.SCHEMA_VERSION + 1  # left as found


def test_a_failing_migration_leaves_no_half_schema(pg: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    migrations = sys.modules["securechat.store.migrate"]
    good = migrations.scripts("postgres")
    monkeypatch.setattr(migrations, "scripts", lambda dialect="sqlite": [
        good[0], "CREATE TABLE half (x INTEGER); SELECT no_such_function();"])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    with pytest.raises(pg.Error):
        store.migrate(pg)
    # DDL is transactional in PostgreSQL: neither version 1 nor the half of version 2 stayed.
    tables = pg.execute("SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = current_schema()").fetchall()
    assert tables == []


@pytest.fixture
def together() -> Iterator[Any]:
    """Start Python scripts that wait at a line "ready" until all are released at once."""
    started: list[subprocess.Popen[str]] = []

    def run(script: str, *args: str) -> list[tuple[int, str, str]]:
        for proc_args in args:
            started.append(subprocess.Popen(
                [sys.executable, "-c", script, *proc_args.split("\0")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=serve_env()))
        for proc in started:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in started:  # released together: each one races the others
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = [proc.communicate(timeout=180) for proc in started]
        return [(p.returncode, out, err) for p, (out, err) in zip(started, done, strict=True)]

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_migrating_a_version_1_database_keeps_its_messages(pg: Any) -> None:
    migrations = sys.modules["securechat.store.migrate"]
    with pg.transaction():
        pg.run_script(migrations.scripts("postgres")[0])
        pg.execute("CREATE TABLE securechat_schema (id INTEGER PRIMARY KEY, version INTEGER)")
        pg.execute("INSERT INTO securechat_schema VALUES (1, 1)")
    pg.execute("INSERT INTO users VALUES ('u', 'old', 'old', 'scrypt$10$8$1', ?, ?, 't')",
               (b"\x00", b"\x00"))
    pg.execute("INSERT INTO conversations VALUES ('c', 'u', ?, 1, 't')", (b"\x00",))
    pg.execute("INSERT INTO messages VALUES ('c', 0, 'm', 'user', ?, '2026-01-02')", (b"\x01",))
    assert store.migrate(pg) == 1 and _version(pg) == store.SCHEMA_VERSION
    (message,) = store.page_messages(pg, "c", 10)
    assert message.status == "complete" and message.content == b"\x01"
    (conv,) = store.list_conversations(pg, "u", 10)
    assert (conv.updated_at, conv.starred) == ("2026-01-02", False)


STARTER = """
import sys
from securechat import create_app
print("ready", flush=True)
sys.stdin.readline()
app = create_app({"KDF_LOG_N": 10, "DATABASE": sys.argv[1]}, instance_path=sys.argv[2])
app.extensions["securechat.db"].close()
print("started", flush=True)
"""


def test_processes_starting_at_once_migrate_once(postgres_url: str, pg: Any, tmp_path: Path,
                                                  together: Any) -> None:
    results = together(STARTER, *(f"{postgres_url}\0{tmp_path / f'i{n}'}" for n in range(4)))
    for status, out, err in results:
        assert status == 0 and out.strip() == "started", err
    assert _version(pg) == store.SCHEMA_VERSION


SQLITE_TO_POSTGRES = {"TEXT": "text", "BLOB": "bytea", "REAL": "double precision",
                      "INTEGER": "integer"}


def test_both_dialects_build_the_same_schema(pg: Any, tmp_path: Path) -> None:
    store.migrate(pg)
    with closing(store.connect(str(tmp_path / "db.sqlite3"))) as lite:
        store.migrate(lite)
        tables = [r[0] for r in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        expected = {t: {(r[1], SQLITE_TO_POSTGRES[r[2]], bool(r[3] or r[5]))
                        for r in lite.execute(f"PRAGMA table_info({t})")} for t in tables}
        lite_indexes = {r[0] for r in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    found: dict[str, set[tuple[str, str, bool]]] = {}
    for table, column, kind, nullable in pg.execute(
            "SELECT table_name, column_name, data_type, is_nullable"
            " FROM information_schema.columns WHERE table_schema = current_schema()"):
        found.setdefault(table, set()).add((column, kind, nullable == "NO"))
    assert found.pop("securechat_schema")
    assert found == expected
    pg_indexes = {r[0] for r in pg.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'")}
    assert pg_indexes == lite_indexes


# --- at rest: bytea ciphertext, nothing readable in any row -----------------------------------


MARKER, TITLE_MARKER = "zq-pg-marker-41d7e0", "zq-pg-title-9c2b55"


def _forms(text: str) -> list[bytes]:
    raw = text.encode()
    return [raw, text.encode("utf-16-le"), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def _every_value(db: Any) -> bytes:
    """Every value of every table of the schema, as a backup would hold it."""
    tables = [r[0] for r in db.execute("SELECT table_name FROM information_schema.tables"
                                       " WHERE table_schema = current_schema()")]
    values = [v for t in tables for row in db.execute(f"SELECT * FROM {t}")  # noqa: S608
              for v in row]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


@pytest.fixture
def pg_app(postgres_url: str, instance: Path) -> Iterator[Flask]:
    app = create_app({**FAST, "DATABASE": postgres_url}, instance_path=instance)
    yield app
    app.extensions["securechat.db"].close()


def test_only_ciphertext_is_stored_as_bytea(pg_app: Flask) -> None:
    http = pg_app.test_client()
    auth = AuthActions(http)
    auth.signup("mallory")
    conv = auth.new_conversation(TITLE_MARKER)
    for i in range(5):
        assert auth.send(conv["id"], f"{MARKER} number {i}").status_code == 201
    token = http.get_cookie(COOKIE).value
    with open_database(pg_app) as db:
        kinds = {(t, c): k for t, c, k in db.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema()")}
        for column in [("messages", "content"), ("conversations", "title"),
                       ("users", "wrapped_key"), ("users", "salt"),
                       ("sessions", "wrapped_key"), ("sessions", "token_hash")]:
            assert kinds[column] == "bytea", column
        for (content,) in db.execute("SELECT content FROM messages"):
            assert isinstance(content, bytes) and content[0] == 1 and len(content) > 28
        blob = _every_value(db)
    for secret in (MARKER, TITLE_MARKER, PASSWORD, token, token.rpartition(".")[0],
                   auth.token or ""):
        for form in _forms(secret):
            assert form not in blob, f"{secret[:6]}… readable in the database"
    assert b"mallory" in blob  # the scan sees what is stored in the clear


# --- positions: gap-free and ordered, whatever process writes -----------------------------------


WRITER = """
import sys
from securechat import store
database, user, conv, tag, count = sys.argv[1:6]
db = store.connect(database)
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(count)):
    mid = f"{tag}-{i:04d}"
    # The sealed bytes name the position they were sealed for, to be checked below.
    store.append_message(db, user, conv, mid, "user", lambda p: f"{mid}@{p}".encode(),
                         "2026-01-01T00:00:00.000000Z")
db.close()
print("done", flush=True)
"""
EACH = 150


@pytest.mark.every_store
def test_positions_stay_gap_free_and_ordered_across_processes(
        database: str | None, tmp_path: Path, together: Any) -> None:
    target = database or str(tmp_path / "db.sqlite3")
    with closing(store.connect(target)) as db:
        store.migrate(db)
        store.create_user(db, store.User("u1", "olga", "scrypt$10$8$1", b"s" * 16, b"k" * 60),
                          "2026-01-01T00:00:00Z")
        store.create_conversation(db, "c1", "u1", b"t" * 40, "2026-01-01T00:00:00Z")
    for status, out, err in together(WRITER, *(f"{target}\0u1\0c1\0{tag}\0{EACH}"
                                               for tag in ("a", "b"))):
        assert status == 0 and out.strip() == "done", err
    with closing(store.connect(target)) as db:
        rows = db.execute("SELECT position, id, content FROM messages"
                          " WHERE conversation_id = ? ORDER BY position", ("c1",)).fetchall()
        (next_position,) = db.execute("SELECT next_position FROM conversations WHERE id = ?",
                                      ("c1",)).fetchone()
    assert [r[0] for r in rows] == list(range(2 * EACH)) and next_position == 2 * EACH
    for position, mid, content in rows:
        assert bytes(content) == f"{mid}@{position}".encode()  # sealed for its own position
    for tag in ("a", "b"):
        mine = [mid for _, mid, _ in rows if mid.startswith(tag)]
        assert mine == [f"{tag}-{i:04d}" for i in range(EACH)]  # each writer's order kept
    switches = sum(1 for x, y in zip(rows, rows[1:], strict=False) if x[1][0] != y[1][0])
    print(f"\n[positions] {2 * EACH} appends from 2 processes, {switches} switches of writer")


# --- a request holds no connection while the backend answers ------------------------------------


class _Answering:
    """A responder whose stream the test steps through, one chunk at a time."""

    def reply(self, history: Any) -> str:
        return "whole"

    def stream(self, history: Any) -> Iterator[str]:
        yield from ("one ", "two")


def _in_use(app: Flask) -> int:
    stats = app.extensions["securechat.db"]._pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


def test_a_streaming_reply_holds_no_connection(pg_app: Flask) -> None:
    pg_app.extensions["securechat.responder"] = _Answering()
    http: FlaskClient = pg_app.test_client()
    auth = AuthActions(http)
    auth.signup("sam")
    conv = auth.new_conversation()
    response = http.post(f"/api/conversations/{conv['id']}/messages", json={"content": "hi"},
                         headers={**auth.csrf, "Accept": CONTENT_TYPE}, buffered=False)
    chunks = iter(response.response)
    assert next(chunks).startswith(b": stream open")  # the message is stored; backend next
    assert _in_use(pg_app) == 0
    assert b"one" in next(chunks)
    assert _in_use(pg_app) == 0  # nor while the reply arrives
    rest = b"".join(chunks)
    response.close()
    assert b"event: done" in rest
    assert auth.history(conv["id"]) == ["hi", "one two"]


# --- serve (gevent) on PostgreSQL ----------------------------------------------------------------


@pytest.fixture
def served_pg(postgres_url: str, instance: Path) -> Iterator[Served]:
    served = Served(instance, serve_env(SECURECHAT_DATABASE=postgres_url))
    yield served
    served.kill()


def _user(url: str, name: str) -> ChatClient:
    client = ChatClient(url, timeout=60)
    client.register(name, PASSWORD)
    client.login(name, PASSWORD)
    return client


def test_serve_answers_many_concurrent_requests(served_pg: Served) -> None:
    # Logged in one by one (logins queue for KDF slots, a cap of their own), then all at once.
    clients = [_user(served_pg.url, f"many{index}") for index in range(12)]

    def run(index: int) -> list[str]:
        client = clients[index]
        conv = client.new_conversation(f"c{index}")
        for i in range(8):
            client.send(conv["id"], f"{index}-{i}")
        return [m["content"] for m in client.history(conv["id"])]

    with ThreadPoolExecutor(12) as pool:
        for index, contents in enumerate(pool.map(run, range(12))):
            assert contents == [x for i in range(8) for x in (f"{index}-{i}", f"Echo: {index}-{i}")]
    for client in clients:
        client.close()
    assert served_pg.stop()[0] == 0


def _waiting_on_a_lock(admin: Any) -> bool:
    return bool(admin.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname ="
                              " current_database() AND wait_event_type = 'Lock'").fetchone()[0])


def test_a_query_waiting_in_postgresql_stalls_no_other_request(served_pg: Served,
                                                               postgres_url: str) -> None:
    """A send blocked on a row lock waits in its greenlet: health and other users go on."""
    owner, other = _user(served_pg.url, "locked"), _user(served_pg.url, "free")
    conv = owner.new_conversation("held")
    sent: list[Any] = []
    with closing(store.connect(postgres_url)) as holder, holder.transaction():
        # Another transaction holds the conversation's row: the send's UPDATE must wait.
        holder.execute("SELECT id FROM conversations WHERE id = ? FOR UPDATE", (conv["id"],))
        sender = threading.Thread(target=lambda: sent.append(owner.send(conv["id"], "late")))
        sender.start()
        with closing(store.connect(postgres_url)) as admin:
            wait_for(lambda: _waiting_on_a_lock(admin), timeout=30)
        # Were the wait done on the event loop, these would hang until the lock goes.
        assert requests.get(served_pg.url + "/api/health", timeout=10).status_code == 200
        assert other.conversations() == []
        assert other.new_conversation("mine")["title"] == "mine"
        assert sender.is_alive() and not sent
    sender.join(30)
    assert sent and sent[0]["reply"]["content"] == "Echo: late"
    owner.close()
    other.close()


def test_workers_share_one_postgresql(postgres_url: str, instance: Path) -> None:
    served = Served(instance, serve_env(SECURECHAT_DATABASE=postgres_url), ["--workers", "2"])
    try:
        assert "2 workers" in served.first_line
        # Each request on a new connection: the kernel hands them to either worker, and any
        # worker serves any session, since sessions live in the database.
        with _user(served.url, "wendy") as first:
            conv = first.new_conversation("shared")
            for i in range(6):
                with ChatClient(served.url, timeout=60) as device:
                    device.login("wendy", PASSWORD)
                    device.send(conv["id"], f"from device {i}")
            assert len(first.history(conv["id"])) == 12
    finally:
        assert served.stop()[0] == 0


def test_serve_refuses_an_unreachable_server_in_one_line(instance: Path) -> None:
    # Port 1 on loopback: nothing listens there.
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/chat"
    result = refused(instance, serve_env(SECURECHAT_DATABASE=url))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to PostgreSQL" in lines[0], result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "app:***@127.0.0.1:1/chat" in lines[0]


def test_sqlite_is_still_the_default(app: Flask, instance: Path) -> None:
    assert app.config["DATABASE"] == str(instance / "securechat.sqlite3")
    with open_database(app) as db:
        assert isinstance(db, sqlite3.Connection)
