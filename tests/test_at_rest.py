"""Zero-access at rest: nothing readable in any byte of the instance folder."""

from __future__ import annotations

import base64
from contextlib import closing
from pathlib import Path

import pytest
from flask import Flask

from securechat import BackgroundServer, ChatClient

from .helpers import PASSWORD, AuthActions, open_database

MARKER = "zq-unique-marker-7f3a9c"
TITLE_MARKER = "zq-title-marker-5b2e11"


def every_byte(folder: Path) -> bytes:
    """All bytes of every file below ``folder`` (database, WAL, shm, secret, ...)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def forms(text: str) -> list[bytes]:
    """The ways a string could be written: utf-8, utf-16, and base64 of it."""
    raw = text.encode("utf-8")
    return [raw, text.encode("utf-16-le"), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def assert_absent(blob: bytes, secret: str) -> None:
    for form in forms(secret):
        assert form not in blob, f"{secret[:6]}… found at rest"


def test_nothing_readable_at_rest(app: Flask, instance: Path, server: BackgroundServer) -> None:
    import sqlite3

    # An open connection keeps the WAL file from being folded away, so it is scanned too.
    keeper = sqlite3.connect(app.config["DATABASE"])
    keeper.execute("SELECT COUNT(*) FROM users").fetchone()
    client = ChatClient(server.url)
    client.register("mallory", PASSWORD)
    client.login("mallory", PASSWORD)
    token_cookie = client.http.cookies.get("securechat_session")
    token = token_cookie.rpartition(".")[0]
    conv = client.new_conversation(TITLE_MARKER)
    for i in range(20):
        client.send(conv["id"], f"{MARKER} number {i}")
    assert len(client.history(conv["id"])) == 40
    secrets_to_hide = [MARKER, TITLE_MARKER, PASSWORD, token, token_cookie, client.csrf_token or ""]

    # While the server runs (WAL not yet checkpointed) ...
    live = every_byte(instance)
    assert (instance / "securechat.sqlite3-wal").exists()
    for secret in secrets_to_hide:
        assert_absent(live, secret)
    assert len(live) > 0
    for path in instance.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    # ... and after it stopped.
    keeper.close()
    client.close()
    server.stop()
    for secret in secrets_to_hide:
        assert_absent(every_byte(instance), secret)
    # The proof the scan can see: the (non-secret) username is stored in the clear.
    assert b"mallory" in every_byte(instance)


@pytest.mark.every_store
def test_deleted_conversation_leaves_no_ciphertext(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    sent = auth.send(conv["id"], "to be deleted").get_json()
    assert auth.http.delete(f"/api/conversations/{conv['id']}",
                            headers=auth.csrf).status_code == 204
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0
        assert (
            db.execute(
                "SELECT COUNT(*) FROM messages WHERE id = ?", (sent["message"]["id"],)
            ).fetchone()[0]
            == 0
        )


def test_database_stores_only_ciphertext_blobs(app: Flask, auth: AuthActions) -> None:
    import sqlite3

    auth.signup()
    conv = auth.new_conversation("title")
    assert auth.send(conv["id"], "hello").status_code == 201
    with closing(sqlite3.connect(app.config["DATABASE"])) as db, db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        for (content,) in db.execute("SELECT content FROM messages"):
            assert isinstance(content, bytes) and content[0] == 1 and len(content) > 28
        for (title,) in db.execute("SELECT title FROM conversations"):
            assert isinstance(title, bytes) and b"title" not in title
        columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
        # The token only as a hash; the browser and address only sealed (in ``details``).
        assert columns == {"token_hash", "user_id", "wrapped_key", "created_at", "last_seen",
                           "id", "details"}
