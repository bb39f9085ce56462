"""Conversations: rename and star, default titles, regenerate a reply, edit the last message."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from securechat import protocol
from securechat.backends import BackendError, BackendUnavailable, Turn

from .helpers import AuthActions, assert_error, open_database

pytestmark = pytest.mark.every_store


class Numbered:
    """A backend whose replies are numbered, so a regenerated reply differs from the last."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_with: BackendError | None = None
        self.seen: list[list[Turn]] = []
        self.during: Any = None  # called while "thinking" (another tab acting meanwhile)

    def _next(self, history: Sequence[Turn]) -> str:
        self.seen.append(list(history))
        if self.during is not None:
            self.during()
        if self.fail_with is not None:
            raise self.fail_with
        self.calls += 1
        return f"answer {self.calls} to {history[-1]['content']}"

    def reply(self, history: Sequence[Turn]) -> str:
        return self._next(history)

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self._next(history))


@pytest.fixture
def backend(app: Flask) -> Numbered:
    responder = Numbered()
    app.extensions["securechat.responder"] = responder
    return responder


def path(conv: str, rest: str = "") -> str:
    return f"/api/conversations/{conv}{rest}"


def messages(auth: AuthActions, conv: str) -> list[dict[str, Any]]:
    response = auth.http.get(path(conv, "/messages?limit=200"))
    assert response.status_code == 200
    return list(response.get_json()["messages"])


def sse(auth: AuthActions, method: str, url: str, body: Any) -> list[tuple[str, Any]]:
    response = auth.http.open(url, method=method, json=body,
                              headers={**auth.csrf, "Accept": protocol.CONTENT_TYPE})
    assert response.status_code == 200, response.text
    return [(e.event, json.loads(e.data)) for e in protocol.parse([response.data])]


# --- default titles ----------------------------------------------------------------------


def test_an_untitled_conversation_is_named_after_its_first_message(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    assert conv["title"] == "New conversation"  # until there is a message
    auth.send(conv["id"], "\n  Plan   the trip to Lisbon  \nwith the kids")
    auth.send(conv["id"], "a later message changes nothing")
    assert auth.conversations()[0]["title"] == "Plan the trip to Lisbon"


def test_a_long_first_line_is_cut_to_60_characters(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "word " * 40)
    title = auth.conversations()[0]["title"]
    assert len(title) == 60 and title.endswith("…") and title.startswith("word word")


def test_a_chosen_title_stays(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation("Taxes 2026")["id"]
    auth.send(conv, "what can I deduct?")
    assert auth.conversations()[0]["title"] == "Taxes 2026"


def test_the_default_title_follows_an_edit_until_renamed(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    first = auth.send(conv, "first idea").get_json()["message"]
    edited = auth.http.put(path(conv, f"/messages/{first['id']}"), json={"content": "better"},
                           headers=auth.csrf)
    assert edited.status_code == 201
    assert auth.conversations()[0]["title"] == "better"
    assert auth.http.patch(path(conv), json={"title": "Mine"}, headers=auth.csrf).status_code \
        == 200
    again = edited.get_json()["message"]
    auth.http.put(path(conv, f"/messages/{again['id']}"), json={"content": "best"},
                  headers=auth.csrf)
    assert auth.conversations()[0]["title"] == "Mine"


def test_the_title_is_sealed_at_rest(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "Secret plans for Lisbon")
    with open_database(app) as db:
        stored = bytes(db.execute("SELECT title FROM conversations").fetchone()[0])
    assert b"Lisbon" not in stored and b"New conversation" not in stored


# --- rename and star ----------------------------------------------------------------------


def test_rename_and_star_leave_updated_at_alone(auth: AuthActions) -> None:
    auth.signup()
    old = auth.new_conversation("old")
    new = auth.new_conversation("new")
    response = auth.http.patch(path(old["id"]), json={"title": "  Renamed  ", "starred": True},
                               headers=auth.csrf)
    assert response.status_code == 200
    shown = response.get_json()
    assert shown == {**old, "title": "Renamed", "starred": True}
    listed = auth.conversations()
    assert [c["id"] for c in listed] == [old["id"], new["id"]]  # starred first
    assert listed[0] == shown
    unstar = auth.http.patch(path(old["id"]), json={"starred": False}, headers=auth.csrf)
    assert unstar.get_json()["starred"] is False and unstar.get_json()["title"] == "Renamed"
    assert [c["id"] for c in auth.conversations()] == [new["id"], old["id"]]


@pytest.mark.parametrize(("body", "code"), [
    ({}, "invalid_field"),
    ({"title": "   "}, "invalid_title"),
    ({"title": "x" * 201}, "invalid_title"),
    ({"title": 5}, "invalid_field"),
    ({"starred": "yes"}, "invalid_field"),
    ({"starred": 1}, "invalid_field"),
    ({"title": "ok", "color": "red"}, "invalid_field"),
])
def test_bad_patches_are_400(auth: AuthActions, body: dict[str, Any], code: str) -> None:
    auth.signup()
    conv = auth.new_conversation("kept")["id"]
    assert_error(auth.http.patch(path(conv), json=body, headers=auth.csrf), 400, code)
    assert auth.conversations()[0]["title"] == "kept"


def test_patch_needs_csrf_and_ownership(auth: AuthActions, make_auth: Any) -> None:
    auth.signup()
    conv = auth.new_conversation("mine")["id"]
    assert_error(auth.http.patch(path(conv), json={"title": "x"}), 403)
    mallory = make_auth()
    mallory.signup("mallory")
    assert_error(mallory.http.patch(path(conv), json={"title": "pwned"},
                                    headers=mallory.csrf), 404, "not_found")
    assert_error(auth.http.patch(path("nope"), json={"title": "x"}, headers=auth.csrf), 404)
    assert auth.conversations()[0]["title"] == "mine"


# --- regenerate ---------------------------------------------------------------------------


def reply(auth: AuthActions, conv: str, body: Any = None) -> TestResponse:
    return auth.http.post(path(conv, "/reply"), json=body, headers=auth.csrf)


def test_regenerate_replaces_the_last_reply(auth: AuthActions, backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    first = auth.send(conv, "hi").get_json()["reply"]
    again = reply(auth, conv, {"regenerate": True})
    assert again.status_code == 201
    second = again.get_json()["reply"]
    assert second["content"] == "answer 2 to hi" and second["id"] != first["id"]
    assert [m["content"] for m in messages(auth, conv)] == ["hi", "answer 2 to hi"]
    assert backend.seen[-1] == [{"role": "user", "content": "hi"}]  # not the old reply
    # Positions are reused: the next message follows at once.
    auth.send(conv, "next")
    assert len(messages(auth, conv)) == 4


def test_regenerate_streams_too(auth: AuthActions, backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "hi")
    events = sse(auth, "POST", path(conv, "/reply"), {"regenerate": True})
    assert [name for name, _ in events][-1] == "done"
    assert "".join(d["content"] for n, d in events if n == "delta") == "answer 2 to hi"
    assert [m["content"] for m in messages(auth, conv)] == ["hi", "answer 2 to hi"]


def test_a_failed_regenerate_keeps_the_old_reply(auth: AuthActions, backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "hi")
    backend.fail_with = BackendUnavailable("The AI backend cannot be reached.")
    assert_error(reply(auth, conv, {"regenerate": True}), 503, "backend_unavailable")
    assert [m["content"] for m in messages(auth, conv)] == ["hi", "answer 1 to hi"]


def test_a_regenerate_cut_short_replaces_the_reply_marked(auth: AuthActions,
                                                          backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "hi")
    cut = BackendError("The reply was cut.")
    cut.partial = "half of it"
    backend.fail_with = cut
    assert reply(auth, conv, {"regenerate": True}).status_code == 502
    shown = messages(auth, conv)
    assert [m["content"] for m in shown] == ["hi", "half of it"]
    assert shown[1]["incomplete"] is True


def test_a_message_sent_meanwhile_is_never_deleted(auth: AuthActions,
                                                   backend: Numbered) -> None:
    from securechat.server import messages as stored

    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "hi")

    def other_tab() -> None:
        # alice's other tab sends while this reply is being generated.
        backend.during = None
        stored.append(conv, "user", "from the other tab")

    backend.during = other_tab
    assert_error(reply(auth, conv, {"regenerate": True}), 409, "conflict")
    contents = [m["content"] for m in messages(auth, conv)]
    assert contents == ["hi", "answer 1 to hi", "from the other tab"]


def test_plain_reply_still_answers_only_an_unanswered_message(auth: AuthActions,
                                                              backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    assert_error(reply(auth, conv), 409, "nothing_to_answer")  # empty
    auth.send(conv, "hi")
    assert_error(reply(auth, conv), 409, "nothing_to_answer")  # answered
    assert_error(reply(auth, conv, {}), 409, "nothing_to_answer")
    backend.fail_with = BackendUnavailable("down")
    auth.send(conv, "again")
    backend.fail_with = None
    retried = reply(auth, conv)
    assert retried.status_code == 201 and retried.get_json()["reply"]["content"] == \
        "answer 2 to again"


@pytest.mark.parametrize("body", [{"regenerate": "yes"}, {"regenerate": 1}, {"again": True}])
def test_bad_reply_bodies_are_400(auth: AuthActions, backend: Numbered, body: Any) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "hi")
    assert_error(reply(auth, conv, body), 400, "invalid_field")
    assert backend.calls == 1


# --- edit and resend ------------------------------------------------------------------------


def test_editing_the_last_message_replaces_what_followed(auth: AuthActions,
                                                         backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    auth.send(conv, "one")
    second = auth.send(conv, "two").get_json()["message"]
    edited = auth.http.put(path(conv, f"/messages/{second['id']}"), json={"content": "TWO"},
                           headers=auth.csrf)
    assert edited.status_code == 201
    body = edited.get_json()
    assert body["message"]["content"] == "TWO" and body["message"]["role"] == "user"
    assert body["reply"]["content"] == "answer 3 to TWO"
    assert [m["content"] for m in messages(auth, conv)] == [
        "one", "answer 1 to one", "TWO", "answer 3 to TWO"]
    assert backend.seen[-1][-1] == {"role": "user", "content": "TWO"}


def test_editing_streams_too(auth: AuthActions, backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    sent = auth.send(conv, "one").get_json()["message"]
    events = sse(auth, "PUT", path(conv, f"/messages/{sent['id']}"), {"content": "uno"})
    assert events[-1][0] == "done" and events[-1][1]["content"] == "answer 2 to uno"
    assert [m["content"] for m in messages(auth, conv)] == ["uno", "answer 2 to uno"]


def test_only_the_last_user_message_can_be_edited(auth: AuthActions, make_auth: Any,
                                                  backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    first = auth.send(conv, "one").get_json()
    auth.send(conv, "two")
    put = auth.http.put
    assert_error(put(path(conv, f"/messages/{first['message']['id']}"),
                     json={"content": "x"}, headers=auth.csrf), 409, "not_last_user_message")
    assert_error(put(path(conv, f"/messages/{first['reply']['id']}"),
                     json={"content": "x"}, headers=auth.csrf), 409, "not_last_user_message")
    assert_error(put(path(conv, "/messages/nope"), json={"content": "x"}, headers=auth.csrf),
                 404, "not_found")
    last = messages(auth, conv)[2]
    assert_error(put(path(conv, f"/messages/{last['id']}"), json={"content": "  "},
                     headers=auth.csrf), 400, "invalid_content")
    assert_error(put(path(conv, f"/messages/{last['id']}"), json={"content": "x"}), 403)
    mallory = make_auth()
    mallory.signup("mallory")
    assert_error(mallory.http.put(path(conv, f"/messages/{last['id']}"), json={"content": "x"},
                                  headers=mallory.csrf), 404)
    assert len(messages(auth, conv)) == 4 and backend.calls == 2


def test_an_edit_survives_a_backend_failure(auth: AuthActions, backend: Numbered) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    sent = auth.send(conv, "one").get_json()["message"]
    backend.fail_with = BackendUnavailable("down")
    assert_error(auth.http.put(path(conv, f"/messages/{sent['id']}"), json={"content": "uno"},
                               headers=auth.csrf), 503)
    assert [m["content"] for m in messages(auth, conv)] == ["uno"]  # stored first
    backend.fail_with = None
    assert reply(auth, conv).get_json()["reply"]["content"] == "answer 2 to uno"
