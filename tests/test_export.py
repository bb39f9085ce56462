"""Export: the documented JSON and Markdown, streamed, as attachments; the encrypted archive."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask

from securechat import archive, crypto, records
from securechat.errors import DecryptionError
from securechat.server import export

from .helpers import AuthActions, assert_error, open_database

pytestmark = pytest.mark.every_store

FENCED = "look: ```python\nx = 1\n``` and ````` five"


def fill(auth: AuthActions) -> list[dict[str, Any]]:
    """Two conversations of the user's, one starred; their ids in creation order."""
    first = auth.new_conversation("First")
    for text in ("hello", FENCED):
        assert auth.send(first["id"], text).status_code == 201
    second = auth.new_conversation("Second — ünïcode")
    assert auth.send(second["id"], "a question").status_code == 201
    r = auth.http.patch(f"/api/conversations/{second['id']}", json={"starred": True},
                        headers=auth.csrf)
    assert r.status_code == 200
    return [first, second]


def get_export(auth: AuthActions, fmt: str = "json") -> Any:
    return auth.http.get(f"/api/export?format={fmt}", headers=auth.csrf)


def test_json_export_is_the_documented_format(auth: AuthActions) -> None:
    auth.signup()
    convs = fill(auth)
    response = get_export(auth)
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "application/json"
    assert re.fullmatch(r'attachment; filename="securechat-export-\d{4}-\d\d-\d\d\.json"',
                        response.headers["Content-Disposition"])
    assert response.headers["Cache-Control"] == "no-store"
    doc = json.loads(response.data)
    assert list(doc) == ["format", "version", "username", "exported_at", "conversations"]
    assert (doc["format"], doc["version"], doc["username"]) == ("securechat-export", 1, "alice")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["exported_at"])
    got = doc["conversations"]
    assert [c["id"] for c in got] == [c["id"] for c in convs]  # oldest first
    assert [set(c) for c in got] == [{"id", "title", "created_at", "starred", "messages"}] * 2
    assert [(c["title"], c["starred"]) for c in got] == [("First", False),
                                                        ("Second — ünïcode", True)]
    assert got[0]["created_at"] == convs[0]["created_at"]
    assert [(m["role"], m["content"]) for m in got[0]["messages"]] == [
        ("user", "hello"), ("assistant", "Echo: hello"), ("user", FENCED),
        ("assistant", f"Echo: {FENCED}")]
    assert all(set(m) == {"role", "content", "created_at"} for m in got[0]["messages"])
    history = auth.http.get(f"/api/conversations/{convs[0]['id']}/messages").get_json()
    assert [m["created_at"] for m in history["messages"]] == \
        [m["created_at"] for m in got[0]["messages"]]


def test_an_incomplete_reply_is_marked(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation("cut")["id"]
    auth.send(conv, "hi")
    with open_database(app) as db:
        user_id = db.execute("SELECT id FROM users").fetchone()[0]
    with app.test_request_context():
        from flask import g

        from securechat.server import messages

        g.user_id = user_id
        g.data_key = _data_key(app, "alice")
        messages.append(conv, "assistant", "half a rep", records.INCOMPLETE)
    last = json.loads(get_export(auth).data)["conversations"][0]["messages"][-1]
    assert last == {"role": "assistant", "content": "half a rep",
                    "created_at": last["created_at"], "incomplete": True}
    assert "### assistant · " in get_export(auth, "markdown").get_data(as_text=True)
    assert "(incomplete)" in get_export(auth, "markdown").get_data(as_text=True)


def _data_key(app: Flask, username: str) -> bytes:
    from securechat import store

    from .helpers import PASSWORD

    with open_database(app) as db:
        user = store.find_user(db, username)
    assert user is not None
    kek = crypto.derive_kek(PASSWORD, user.salt, crypto.KdfParams.decode(user.kdf))
    return crypto.open_(kek, user.wrapped_key, records.user_key_ad(user.id))


def test_markdown_export_is_readable_and_fenced(auth: AuthActions) -> None:
    auth.signup()
    fill(auth)
    response = get_export(auth, "markdown")
    assert response.status_code == 200 and response.mimetype == "text/markdown"
    assert response.headers["Content-Disposition"].endswith('.md"')
    text = response.get_data(as_text=True)
    assert text.splitlines()[-1] == "<!-- export complete: 2 conversations, 6 messages -->"
    assert "## First" in text and "## Second — ünïcode" in text
    # Each message sits verbatim between fences longer than any backtick run inside it.
    assert f"``````text\n{FENCED}\n``````" in text
    assert "```text\nhello\n```" in text


@pytest.mark.parametrize("content, ticks", [("plain", 3), ("`a`", 3), ("``` x", 4),
                                             ("a ```` b ``` c", 5), ("`" * 9, 10)])
def test_the_fence_outgrows_every_backtick_run(content: str, ticks: int) -> None:
    assert export.fence(content) == "`" * ticks


def test_an_empty_history_exports_too(auth: AuthActions) -> None:
    auth.signup()
    assert json.loads(get_export(auth).data)["conversations"] == []
    assert get_export(auth, "markdown").get_data(as_text=True).endswith(
        "<!-- export complete: 0 conversations, 0 messages -->\n")


def test_export_needs_a_session_and_the_csrf_header_though_it_is_a_get(
        auth: AuthActions) -> None:
    assert_error(auth.http.get("/api/export?format=json"), 401, "unauthorized")
    auth.signup()
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        for fmt in ("json", "markdown"):
            assert_error(auth.http.get(f"/api/export?format={fmt}", headers=headers), 403,
                         "csrf_failed")


@pytest.mark.parametrize("fmt", ["xml", "JSON", "", "md"])
def test_an_unknown_format_is_400(auth: AuthActions, fmt: str) -> None:
    auth.signup()
    assert_error(get_export(auth, fmt), 400, "invalid_query")


def test_only_your_own_history_is_exported(auth: AuthActions,
                                           make_auth: Any) -> None:
    auth.signup()
    fill(auth)
    bob = make_auth()
    bob.signup("bob")
    bob.new_conversation("bob's")
    doc = json.loads(get_export(bob).data)
    assert [c["title"] for c in doc["conversations"]] == ["bob's"]
    assert doc["username"] == "bob"


def test_export_is_streamed_a_batch_at_a_time(auth: AuthActions,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "MESSAGE_BATCH", 3)
    monkeypatch.setattr(export, "CONVERSATION_BATCH", 1)
    auth.signup()
    fill(auth)
    response = auth.http.get("/api/export?format=json", headers=auth.csrf, buffered=False)
    chunks = list(response.response)
    # Head, then a chunk per batch of 3 messages, a close per conversation, the end.
    assert len(chunks) == 1 + (2 + 1) + (1 + 1) + 1
    assert json.loads(b"".join(chunks))["conversations"][1]["messages"][0]["content"] == \
        "a question"
    response.close()


def test_a_failed_export_never_looks_whole(app: Flask, auth: AuthActions,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "MESSAGE_BATCH", 1)  # the first message goes out whole
    auth.signup()
    fill(auth)
    with open_database(app) as db:  # a stored record altered: it fails its check mid-way
        db.execute("UPDATE messages SET content = ? WHERE role = 'assistant'",
                   (b"\x01" + bytes(40),))
    for fmt, end in (("markdown", b"export complete"), ("json", b"]}\n")):
        response = auth.http.get(f"/api/export?format={fmt}", headers=auth.csrf,
                                 buffered=False)
        assert response.status_code == 200  # the headers were sent before the failure
        got = b""
        with pytest.raises(DecryptionError):
            for chunk in response.response:
                got += chunk
        assert b"hello" in got and end not in got
        response.close()


def test_each_export_is_a_security_event(auth: AuthActions) -> None:
    auth.signup()
    get_export(auth)
    get_export(auth, "markdown")
    auth.http.post("/api/export/archive", json={"passphrase": "passphrase!"},
                   headers=auth.csrf)
    events = auth.http.get("/api/account/events").get_json()["events"]
    assert [e["type"] for e in events] == ["export", "export", "export", "login"]
    assert all(set(e) == {"type", "at"} for e in events[:3])  # metadata only


def test_the_archive_holds_the_json_export(auth: AuthActions) -> None:
    auth.signup()
    fill(auth)
    response = auth.http.post("/api/export/archive", json={"passphrase": "my backup words"},
                              headers=auth.csrf)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"].endswith('.scarchive"')
    blob = response.data
    head = json.loads(blob.split(b"\n", 1)[0])
    assert head["format"] == "securechat-archive" and head["kdf"]["name"] == "argon2id"
    assert b"hello" not in blob and b"First" not in blob
    inside = json.loads(b"".join(archive.decrypt([blob], "my backup words")))
    plain = json.loads(get_export(auth).data)
    inside.pop("exported_at"), plain.pop("exported_at")
    assert inside == plain
    with pytest.raises(archive.InvalidArchive):
        b"".join(archive.decrypt([blob], "other words!"))


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_field"),
    ({"passphrase": 5}, "invalid_field"),
    ({"passphrase": "short"}, "invalid_password"),
    ({"passphrase": "long enough", "format": "json"}, "invalid_field"),
])
def test_bad_archive_requests_are_400(auth: AuthActions, body: dict[str, Any],
                                      code: str) -> None:
    auth.signup()
    assert_error(auth.http.post("/api/export/archive", json=body, headers=auth.csrf), 400,
                 code)


def test_the_archive_route_needs_the_csrf_header(auth: AuthActions) -> None:
    auth.signup()
    assert_error(auth.http.post("/api/export/archive", json={"passphrase": "long enough"}),
                 403, "csrf_failed")


def test_exports_and_imports_share_a_budget(settings: dict[str, Any], instance: Any) -> None:
    from securechat import create_app

    app = create_app({**settings, "RATELIMIT_ENABLED": True, "EXPORT_RATE_LIMIT": "3 per hour"},
                     instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    doc = json.loads(get_export(auth).data)
    assert auth.http.post("/api/export/archive", json={"passphrase": "passphrase!"},
                          headers=auth.csrf).status_code == 200
    assert auth.http.post("/api/import", json=doc, headers=auth.csrf).status_code == 201
    for response in (get_export(auth, "markdown"),
                     auth.http.post("/api/import", json=doc, headers=auth.csrf)):
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0
    app.extensions["securechat.db"].close()


@pytest.mark.parametrize("title", [
    "<img src=x onerror=alert(1)>", "**bold** and _it_", "[link](javascript:alert(1))",
    "![x](https://example.invalid/x.png)", "`code`", "a\\*b", "&lt;script&gt;", "x | y",
    "~~gone~~", "## not a heading"])
def test_a_title_is_literal_text_in_the_markdown_heading(title: str) -> None:
    """Markup in a title (maybe from someone's imported archive) never becomes markup."""
    shown = export.heading_text(title)
    # Every character that could start markup is escaped, and unescaping gives the title.
    assert re.fullmatch(r"(?:[^\\`*_\[\]<>&!~|#]|\\[\\`*_\[\]<>&!~|#])*", shown), shown
    assert re.sub(r"\\(.)", r"\1", shown) == title


def test_the_markdown_export_escapes_a_hostile_title(auth: AuthActions) -> None:
    auth.signup()
    auth.new_conversation("<img src=x onerror=alert(1)> **hi**")
    text = get_export(auth, "markdown").get_data(as_text=True)
    assert "\n## \\<img src=x onerror=alert(1)\\> \\*\\*hi\\*\\*\n" in text
    assert re.search(r"(?<!\\)<", text.split("<!-- export complete")[0]) is None
