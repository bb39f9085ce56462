"""Import: an export (plain or archived) becomes new conversations of the importing user."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from securechat import create_app, store
from securechat.server import importer, maintenance

from .helpers import AuthActions, assert_error, open_database

pytestmark = pytest.mark.every_store

PASSPHRASE = "backup passphrase"


def fill(auth: AuthActions) -> None:
    """Conversations worth a round trip: several, starred, unicode, fences, many messages."""
    first = auth.new_conversation("First")["id"]
    for text in ("hello", "``` fenced ```\nand more", "ünï — 𝔘nicode ﬁ"):
        assert auth.send(first, text).status_code == 201
    second = auth.new_conversation("Second")["id"]
    for i in range(12):
        assert auth.send(second, f"message {i}").status_code == 201
    auth.http.patch(f"/api/conversations/{second}", json={"starred": True}, headers=auth.csrf)
    auth.new_conversation("Empty")


def exported(auth: AuthActions) -> dict[str, Any]:
    response = auth.http.get("/api/export?format=json", headers=auth.csrf)
    assert response.status_code == 200
    return json.loads(response.data)


def contents(doc: dict[str, Any]) -> list[Any]:
    """What a round trip must keep: everything but ids, the user and the export's time."""
    return [{k: v for k, v in c.items() if k != "id"} for c in doc["conversations"]]


def post_import(auth: AuthActions, body: Any) -> Any:
    return auth.http.post("/api/import", json=body, headers=auth.csrf)


def test_round_trip_into_another_account(auth: AuthActions, make_auth: Any) -> None:
    auth.signup()
    fill(auth)
    doc = exported(auth)
    bob = make_auth()
    bob.signup("bob")
    response = post_import(bob, doc)
    assert response.status_code == 201
    assert response.get_json() == {"imported": 3, "messages": 6 + 24}
    again = exported(bob)
    assert contents(again) == contents(doc)
    # New conversations: new ids, bob's, updated now; alice's are untouched.
    assert not {c["id"] for c in again["conversations"]} & {c["id"] for c in
                                                            doc["conversations"]}
    listed = bob.conversations()
    assert {c["title"] for c in listed} == {"First", "Second", "Empty"}
    newest = max(c["created_at"] for c in doc["conversations"])
    assert all(c["updated_at"] > newest for c in listed)
    assert listed[0]["title"] == "Second" and listed[0]["starred"]
    assert contents(exported(auth)) == contents(doc)
    # They are ordinary conversations: they can be continued, renamed, deleted.
    conv = next(c["id"] for c in listed if c["title"] == "First")
    assert bob.send(conv, "after import").status_code == 201
    assert bob.history(conv)[-2:] == ["after import", "Echo: after import"]


def test_round_trip_through_an_archive(auth: AuthActions, make_auth: Any) -> None:
    auth.signup()
    fill(auth)
    blob = auth.http.post("/api/export/archive", json={"passphrase": PASSPHRASE},
                          headers=auth.csrf).data
    bob = make_auth()
    bob.signup("bob")
    response = post_import(bob, {"archive": base64.b64encode(blob).decode(),
                                 "passphrase": PASSPHRASE})
    assert response.status_code == 201, response.text
    assert response.get_json() == {"imported": 3, "messages": 30}
    assert contents(exported(bob)) == contents(exported(auth))


def test_importing_twice_adds_twice(auth: AuthActions) -> None:
    auth.signup()
    fill(auth)
    doc = exported(auth)
    assert post_import(auth, doc).status_code == 201
    assert len(auth.conversations()) == 6


def test_each_import_is_a_security_event(auth: AuthActions) -> None:
    auth.signup()
    assert post_import(auth, {"format": "securechat-export", "version": 1,
                              "conversations": []}).get_json() == {"imported": 0, "messages": 0}
    events = auth.http.get("/api/account/events").get_json()["events"]
    assert [e["type"] for e in events] == ["import", "login"]


CONVERSATION = {"id": "a", "title": "t", "created_at": "2026-01-01T00:00:00Z",
                "starred": False, "messages": [
                    {"role": "user", "content": "hi", "created_at": "2026-01-01T00:00:01Z"},
                    {"role": "assistant", "content": "yo",
                     "created_at": "2026-01-01T00:00:02+00:00", "incomplete": True}]}
GOOD = {"format": "securechat-export", "version": 1, "username": "x",
        "exported_at": "2026-01-01T00:00:00Z",
        "conversations": [copy.deepcopy(CONVERSATION) for _ in range(4)]}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        keys = [int(k) if k.isdigit() else k for k in
                path.replace("[", ".").replace("]", "").split(".")]
        for key in keys[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return change


_DELETE = object()


@pytest.mark.parametrize("path, value", [
    ("format", "other"),
    ("format", _DELETE),
    ("version", 2),
    ("version", True),
    ("conversations", {}),
    ("conversations", _DELETE),
    ("conversations[3]", "text"),
    ("conversations[3].title", ""),
    ("conversations[3].title", "x" * 201),
    ("conversations[3].title", 7),
    ("conversations[3].created_at", "yesterday"),
    ("conversations[3].created_at", "2026-01-01T00:00:00"),  # no zone
    ("conversations[3].starred", "yes"),
    ("conversations[3].messages", None),
    ("conversations[3].messages[0]", []),
    ("conversations[3].messages[0].role", "system"),
    ("conversations[3].messages[0].role", _DELETE),
    ("conversations[3].messages[0].content", 5),
    ("conversations[3].messages[0].content", "  "),
    ("conversations[3].messages[0].content", "x" * 32_769),
    ("conversations[3].messages[0].content", "\ud800"),
    ("conversations[3].messages[0].created_at", 12),
    ("conversations[3].messages[1].incomplete", "no"),
])
def test_a_bad_document_is_400_naming_the_first_bad_path(app: Flask, auth: AuthActions,
                                                         path: str, value: Any) -> None:
    auth.signup()
    doc = copy.deepcopy(GOOD)
    _set(path, value)(doc)
    response = post_import(auth, doc)
    assert_error(response, 400, "invalid_export")
    assert response.get_json()["error"]["message"].startswith(f"{path}: ")
    assert auth.conversations() == []
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0


def test_the_good_document_imports(auth: AuthActions) -> None:
    auth.signup()
    assert post_import(auth, GOOD).get_json() == {"imported": 4, "messages": 8}
    doc = exported(auth)
    assert doc["conversations"][0]["messages"][1] == {
        "role": "assistant", "content": "yo", "created_at": "2026-01-01T00:00:02.000000Z",
        "incomplete": True}


@pytest.mark.parametrize("body", [[], "text", 5])
def test_a_body_that_is_not_an_object_is_400(auth: AuthActions, body: Any) -> None:
    auth.signup()
    assert_error(post_import(auth, body), 400, "invalid_json")


def test_import_needs_json_a_session_and_the_csrf_header(auth: AuthActions) -> None:
    assert_error(auth.http.post("/api/import", json=GOOD), 401)
    auth.signup()
    assert_error(auth.http.post("/api/import", json=GOOD), 403, "csrf_failed")
    assert_error(auth.http.post("/api/import", data=json.dumps(GOOD), headers=auth.csrf), 415)


def _archive(auth: AuthActions) -> bytes:
    return auth.http.post("/api/export/archive", json={"passphrase": PASSPHRASE},
                          headers=auth.csrf).data


def _flipped(blob: bytes, at: int) -> bytes:
    changed = bytearray(blob)
    changed[at] ^= 1
    return bytes(changed)


def test_every_archive_failure_is_one_error(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    fill(auth)
    blob = _archive(auth)
    b64 = base64.b64encode
    bodies = [
        {"archive": b64(blob).decode(), "passphrase": "not the passphrase"},
        {"archive": b64(blob[:-1]).decode(), "passphrase": PASSPHRASE},
        {"archive": b64(_flipped(blob, len(blob) - 20)).decode(), "passphrase": PASSPHRASE},
        {"archive": b64(_flipped(blob, 5)).decode(), "passphrase": PASSPHRASE},
        {"archive": "not base64!", "passphrase": PASSPHRASE},
        {"archive": "QUJD", "passphrase": PASSPHRASE},
        {"archive": "", "passphrase": PASSPHRASE},
        {"archive": b64(json.dumps(GOOD).encode()).decode(), "passphrase": PASSPHRASE},
    ]
    answers = set()
    before = len(auth.conversations())
    for body in bodies:
        response = post_import(auth, body)
        assert_error(response, 400, "invalid_archive")
        answers.add(response.text)
    assert len(answers) == 1  # the same words whatever went wrong
    assert len(auth.conversations()) == before


@pytest.mark.parametrize("body", [{"archive": 5, "passphrase": "x"}, {"archive": "QUJD"},
                                  {"archive": "QUJD", "passphrase": "x", "more": 1}])
def test_a_malformed_archive_request_is_400(auth: AuthActions, body: Any) -> None:
    auth.signup()
    assert_error(post_import(auth, body), 400, "invalid_field")


def test_a_failure_mid_way_leaves_nothing(app: Flask, auth: AuthActions,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    auth.signup()
    fill(auth)
    doc = exported(auth)
    monkeypatch.setattr(importer, "BATCH", 5)  # the 12-message conversation: three batches
    real = store.portable.add_messages
    calls: list[int] = []

    def failing(db: Any, conv_id: str, rows: Any) -> None:
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real(db, conv_id, rows)

    monkeypatch.setattr(store.portable, "add_messages", failing)
    with open_database(app) as db:
        before = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert_error(post_import(auth, doc), 500, "internal_error")
    assert len(calls) == 3  # it failed after writing two batches
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == before
        assert db.execute("SELECT COUNT(*) FROM conversations WHERE pending IS NOT NULL"
                          ).fetchone()[0] == 0
    assert len(auth.conversations()) == 3
    events = auth.http.get("/api/account/events").get_json()["events"]
    assert [e["type"] for e in events] == ["export", "login"]  # no import event


def test_a_pending_import_is_seen_nowhere(app: Flask, auth: AuthActions,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    auth.signup()
    seen: dict[str, Any] = {}
    real = store.portable.reveal_import

    def look_first(db: Any, user_id: str, pending: str, at: str) -> int:
        # Everything is written, nothing shown yet: as another request would see it.
        other = auth.http.application.test_client()
        other.set_cookie("securechat_session", auth.http.get_cookie("securechat_session").value)
        seen["list"] = other.get("/api/conversations").get_json()["conversations"]
        seen["search"] = other.post("/api/search", json={"q": "hi"},
                                    headers=auth.csrf).get_json()["results"]
        seen["export"] = json.loads(other.get("/api/export", headers=auth.csrf).data)
        with open_database(app) as db2:
            seen["rows"] = db2.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
        return real(db, user_id, pending, at)

    monkeypatch.setattr(store.portable, "reveal_import", look_first)
    assert post_import(auth, GOOD).status_code == 201
    assert seen["rows"] == 4  # written, and yet:
    assert seen["list"] == [] and seen["search"] == [] and seen["export"]["conversations"] == []
    assert len(auth.conversations()) == 4


def test_what_a_dead_import_left_is_swept(settings: dict[str, Any], instance: Path) -> None:
    now = [1_800_000_000.0]
    app = create_app({**settings, "CLOCK": lambda: now[0]}, instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()

    def dies(db: Any, user_id: str, pending: str, at: str) -> int:
        raise KeyboardInterrupt  # stands in for a process killed before the reveal

    real_discard = store.portable.discard_import
    store.portable.reveal_import, saved = dies, store.portable.reveal_import  # type: ignore
    store.portable.discard_import = lambda *a: None  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            post_import(auth, GOOD)
    finally:
        store.portable.reveal_import = saved  # type: ignore[assignment]
        store.portable.discard_import = real_discard  # type: ignore[assignment]
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 4
    maintenance.purge(app)  # too recent: it may still be running
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 4
    now[0] += 86400 + 1
    maintenance.purge(app)
    with open_database(app) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    app.extensions["securechat.db"].close()


def test_the_import_cap_is_its_own(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "MAX_CONTENT_LENGTH": 4096, "MAX_IMPORT_BYTES": 64 * 1024},
                     instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    doc = copy.deepcopy(GOOD)
    doc["conversations"][0]["messages"][0]["content"] = "x" * 20_000
    assert post_import(auth, doc).status_code == 201  # over the usual cap, under its own
    conv = auth.new_conversation()["id"]
    assert_error(auth.send(conv, "x" * 20_000), 413, "too_large")  # others keep theirs
    for conv in doc["conversations"][:3]:
        conv["messages"][0]["content"] = "x" * 30_000
    assert_error(post_import(auth, doc), 413, "too_large")
    app.extensions["securechat.db"].close()


@pytest.mark.parametrize(("setting", "extra"), [("MAX_IMPORT_CONVERSATIONS", "conversations"),
                                                 ("MAX_IMPORT_MESSAGES", "messages")])
def test_an_import_over_its_count_caps_is_400_and_adds_nothing(
        setting: str, extra: str, app: Flask, auth: AuthActions) -> None:
    """GOOD holds 4 conversations and 8 messages: a cap one below refuses it whole."""
    app.config[setting] = {"conversations": 3, "messages": 7}[extra]
    auth.signup()
    response = post_import(auth, GOOD)
    assert_error(response, 400, "invalid_export")
    assert response.get_json()["error"]["message"].startswith("conversations: at most ")
    assert extra in response.get_json()["error"]["message"]
    assert auth.conversations() == []
    app.config[setting] += 1  # exactly at the cap: imported
    assert post_import(auth, GOOD).get_json() == {"imported": 4, "messages": 8}
