"""Search: the user's own titles and messages, opened in the request, newest first, bounded."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from securechat import create_app, crypto
from securechat.server import search

from .helpers import AuthActions, assert_error

pytestmark = pytest.mark.every_store


def find(auth: AuthActions, q: Any, **more: Any) -> Any:
    return auth.http.post("/api/search", json={"q": q, **more}, headers=auth.csrf)


def results(auth: AuthActions, q: str, **more: Any) -> list[dict[str, Any]]:
    response = find(auth, q, **more)
    assert response.status_code == 200, response.text
    return list(response.get_json()["results"])


def test_titles_and_messages_newest_first(auth: AuthActions) -> None:
    auth.signup()
    old = auth.new_conversation("Holiday plans")["id"]
    auth.send(old, "where to go on holiday?")
    new = auth.new_conversation("Groceries")["id"]
    auth.send(new, "milk, and a holiday cake")
    found = results(auth, "holiday")
    # The newest conversation first, its messages newest first; a title before its messages.
    assert [(r["conversation_id"], r["role"]) for r in found] == [
        (new, "assistant"), (new, "user"), (old, None), (old, "assistant"), (old, "user")]
    title_hit = found[2]
    assert title_hit["message_id"] is None and title_hit["title"] == "Holiday plans"
    assert title_hit["snippet"] == "Holiday plans" and title_hit["match"] == [0, 7]
    hit = found[1]
    assert set(hit) == {"conversation_id", "title", "message_id", "role", "snippet", "match",
                        "created_at"}
    assert hit["title"] == "Groceries" and hit["snippet"] == "milk, and a holiday cake"
    assert hit["snippet"][hit["match"][0]:hit["match"][1]] == "holiday"
    history = auth.http.get(f"/api/conversations/{new}/messages").get_json()["messages"]
    assert hit["message_id"] == history[0]["id"] and hit["created_at"] == history[0]["created_at"]


@pytest.mark.parametrize("text, query, matched", [
    ("Die Straße ist lang", "STRASSE", "Straße"),
    ("Die Straße ist lang", "straße", "Straße"),
    ("ＦＵＬＬ width", "full", "ＦＵＬＬ"),
    ("a ﬁle here", "FILE", "ﬁle"),
    ("cafe\u0301 au lait", "CAFÉ", "cafe\u0301"),
    ("café au lait", "cafe\u0301", "café"),
    ("ΣΊΣΥΦΟΣ rolls", "σίσυφος", "ΣΊΣΥΦΟΣ"),
    ("plain ASCII Text", "ascii text", "ASCII Text"),
])
def test_matching_ignores_case_and_compatibility_forms(auth: AuthActions, text: str,
                                                       query: str, matched: str) -> None:
    auth.signup()
    conv = auth.new_conversation("t")["id"]
    auth.send(conv, text)
    found = results(auth, query)
    assert found, (text, query)
    start, end = found[-1]["match"]
    assert found[-1]["snippet"][start:end] == matched
    fold = unicodedata.normalize("NFKC", matched).casefold()
    assert fold == unicodedata.normalize("NFKC", query).casefold()


def test_snippets_are_short_plain_text_around_the_match(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation("t")["id"]
    text = "a" * 500 + "\nneedle\t" + "b" * 500
    auth.send(conv, text)
    hit = results(auth, "needle")[-1]
    assert len(hit["snippet"]) == 200 and "\n" not in hit["snippet"]
    start, end = hit["match"]
    assert hit["snippet"][start:end] == "needle" and 80 < start < 120
    auth.send(conv, "needle at the start " + "c" * 400)
    hit = results(auth, "NEEDLE")[1]
    assert hit["role"] == "user" and hit["match"] == [0, 6] and len(hit["snippet"]) == 200
    auth.send(conv, "x" * 300 + " the end needle")
    hit = results(auth, "needle")[1]
    assert hit["snippet"].endswith("the end needle") and hit["match"] == [194, 200]


def test_limit_and_paging_through_everything(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "SEARCH_SCAN_LIMIT": 100}, instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    for c in range(3):
        conv = auth.new_conversation(f"conversation {c} marker")["id"]
        for i in range(60):
            auth.send(conv, f"{'marker' if i % 3 == 0 else 'other'} {c}-{i}")
    # 3 titles; per conversation 20 user messages and their 20 echoes hold the marker.
    expected = 3 + 3 * 40
    seen: list[tuple[str, str | None]] = []
    pages, before = 0, None
    opened: list[int] = []
    real_open = crypto.open_

    def counting(*args: Any) -> bytes:
        opened[-1] += 1
        return real_open(*args)

    crypto.open_ = counting  # type: ignore[assignment]
    try:
        while True:
            opened.append(0)
            body = {"q": "MARKER", "limit": 30, **({"before": before} if before else {})}
            page = auth.http.post("/api/search", json=body, headers=auth.csrf).get_json()
            pages += 1
            assert len(page["results"]) <= 30
            seen += [(r["conversation_id"], r["message_id"]) for r in page["results"]]
            before = page["next_before"]
            if before is None:
                break
    finally:
        crypto.open_ = real_open  # type: ignore[assignment]
    assert len(seen) == expected and len(set(seen)) == expected  # all, each once
    assert pages >= expected // 30
    # Each request opened at most SEARCH_SCAN_LIMIT messages (plus titles and its session).
    assert max(opened) <= 100 + 3 + 1
    app.extensions["securechat.db"].close()


def test_a_request_stops_at_its_scan_budget(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "SEARCH_SCAN_LIMIT": 100}, instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    conv = auth.new_conversation("t")["id"]
    auth.send(conv, "the only hit")
    for i in range(60):
        auth.send(conv, f"filler {i}")
    page = find(auth, "only hit").get_json()
    assert page["results"] == [] and page["next_before"] is not None  # nothing yet, go on
    page = find(auth, "only hit", before=page["next_before"]).get_json()
    assert [r["role"] for r in page["results"]] == ["assistant", "user"]
    assert page["next_before"] is None
    app.extensions["securechat.db"].close()


def test_new_messages_meanwhile_neither_repeat_nor_skip(auth: AuthActions) -> None:
    auth.signup()
    convs = [auth.new_conversation(f"c{i}")["id"] for i in range(3)]
    for conv in convs:
        for i in range(3):
            auth.send(conv, f"word {i}")
    first = find(auth, "word", limit=5).get_json()
    old = {r["message_id"] for r in results(auth, "word", limit=100)}
    auth.send(convs[0], "word new")  # the oldest one is the most active now
    auth.send(convs[2], "word newer")  # and the one being read has more
    rest, before = [], first["next_before"]
    while before:
        page = find(auth, "word", limit=5, before=before).get_json()
        rest += page["results"]
        before = page["next_before"]
    ids = [r["message_id"] for r in first["results"] + rest]
    assert len(ids) == len(set(ids))  # none twice
    assert old <= set(ids) and len(old) == 18  # none skipped


def test_only_your_own_history(auth: AuthActions, make_auth: Any) -> None:
    auth.signup()
    auth.send(auth.new_conversation("secret title")["id"], "secret words")
    bob = make_auth()
    bob.signup("bob")
    bob.new_conversation("mine")
    assert results(bob, "secret") == []


@pytest.mark.parametrize("body, code", [
    ({"q": ""}, "invalid_query"),
    ({"q": "   "}, "invalid_query"),
    ({"q": "x" * 201}, "invalid_query"),
    ({}, "invalid_field"),
    ({"q": 5}, "invalid_field"),
    ({"q": "x", "limit": 0}, "invalid_query"),
    ({"q": "x", "limit": 101}, "invalid_query"),
    ({"q": "x", "limit": "5"}, "invalid_query"),
    ({"q": "x", "limit": True}, "invalid_query"),
    ({"q": "x", "before": "nonsense"}, "invalid_query"),
    ({"q": "x", "before": "WzEsMiwzXQ"}, "invalid_query"),  # [1,2,3]
    ({"q": "x", "page": 2}, "invalid_field"),
])
def test_bad_searches_are_400(auth: AuthActions, body: dict[str, Any], code: str) -> None:
    auth.signup()
    assert_error(auth.http.post("/api/search", json=body, headers=auth.csrf), 400, code)


def test_limits_default_and_maximum(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation("t")["id"]
    for i in range(60):
        auth.send(conv, f"hit {i}")
    assert len(results(auth, "hit")) == 20
    assert len(results(auth, "hit", limit=100)) == 100


def test_search_needs_a_session_and_the_csrf_header(auth: AuthActions) -> None:
    assert_error(auth.http.post("/api/search", json={"q": "x"}), 401)
    auth.signup()
    assert_error(auth.http.post("/api/search", json={"q": "x"}), 403, "csrf_failed")
    assert_error(auth.http.get("/api/search?q=x", headers=auth.csrf), 405)


def test_the_terms_are_logged_nowhere_and_stored_nowhere(app: Flask, auth: AuthActions,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    auth.signup()
    auth.send(auth.new_conversation("t")["id"], "zanzibar-4471")
    caplog.set_level(logging.DEBUG)
    assert results(auth, "zanzibar-4471")
    assert "zanzibar" not in caplog.text
    events = auth.http.get("/api/account/events").get_json()["events"]
    assert [e["type"] for e in events] == ["login"]  # a read: no event


def test_find_points_into_the_text_as_written() -> None:
    assert search.find("ABC", "b") == (1, 2)
    assert search.find("ﬁﬁx", "fix") == (1, 3)  # half a ligature matches no part of it
    assert search.find("Straße", "ss") == (4, 5)
    assert search.find("nothing", "x") is None


def test_search_is_rate_limited_per_user(settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "RATELIMIT_ENABLED": True, "SEARCH_RATE_LIMIT": "2 per minute"},
                     instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    assert find(auth, "a").status_code == find(auth, "b").status_code == 200
    assert_error(find(auth, "c"), 429, "rate_limited")
    app.extensions["securechat.db"].close()
