"""Streaming replies as Server-Sent Events, offline (echo): the contract, the codec, the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from securechat import ApiError, ChatClient, protocol, records, store
from securechat.store.migrate import scripts, statements

from .fake_backend import stream_events
from .helpers import AuthActions, assert_error, open_database

# Streams store and read through the same queries on either database.
pytestmark = pytest.mark.every_store


def messages_path(conv_id: str) -> str:
    return f"/api/conversations/{conv_id}/messages"


# --- offline: the echo responder streams word by word -----------------------------------------


@pytest.mark.parametrize("window", [0.0, 0.05])
def test_echo_streams_deltas_then_done(app: Flask, alice: ChatClient, window: float) -> None:
    app.config["STREAM_COALESCE_WINDOW"] = window
    conv = alice.new_conversation()["id"]
    body = {"content": "hello streaming world"}
    response, events = stream_events(alice, messages_path(conv), body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"
    names = [name for name, _ in events]
    assert names == ["delta"] * (len(names) - 1) + ["done"]
    # One event per word without coalescing; with it, words that came together share one.
    assert len(names) == 5 if window == 0 else 2 <= len(names) <= 5
    text = "".join(data["content"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert text == done["content"] == "Echo: hello streaming world"
    assert set(done) == {"id", "role", "content", "created_at"}  # no "incomplete" when whole
    history = alice.history(conv)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "hello streaming world" and history[1] == done


def test_json_stays_the_default(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    for accept in ("application/json", "*/*", "application/json, text/event-stream;q=0.5"):
        response = auth.http.post(messages_path(conv), json={"content": "hi"},
                                  headers={**auth.csrf, "Accept": accept})
        assert response.status_code == 201 and set(response.get_json()) == {"message", "reply"}


def test_client_stream_yields_chunks_and_keeps_the_message(app: Flask,
                                                           alice: ChatClient) -> None:
    app.config["STREAM_COALESCE_WINDOW"] = 0  # one event per chunk: each is yielded
    conv = alice.new_conversation()["id"]
    reply = alice.stream(conv, "one two three")
    assert reply.message is None
    chunks = list(reply)
    assert chunks == ["Echo: ", "one ", "two ", "three"]
    assert reply.text == "Echo: one two three" and reply.message is not None
    assert alice.history(conv)[-1] == reply.message
    assert "done" in repr(reply)


@pytest.mark.parametrize(
    "content,status,code",
    [
        ("", 400, "invalid_content"),
        ("   ", 400, "invalid_content"),
        ("x" * 32769, 400, "invalid_content"),
    ],
)
def test_invalid_message_is_a_json_error_before_any_stream(
    alice: ChatClient, content: str, status: int, code: str
) -> None:
    conv = alice.new_conversation()["id"]
    response, events = stream_events(alice, messages_path(conv), {"content": content})
    assert response.status_code == status and events == []
    with pytest.raises(ApiError) as raised:
        alice.stream(conv, content)
    assert (raised.value.status, raised.value.code) == (status, code)
    assert alice.history(conv) == []


def test_stream_needs_session_csrf_and_ownership(
    alice: ChatClient, bob: ChatClient, client: ChatClient
) -> None:
    conv = alice.new_conversation()["id"]
    response, _ = stream_events(client, messages_path(conv), {"content": "hi"})
    assert response.status_code == 401
    response, _ = stream_events(
        alice, messages_path(conv), {"content": "hi"}, **{"X-CSRF-Token": "wrong"}
    )
    assert response.status_code == 403
    with pytest.raises(ApiError) as raised:
        bob.stream(conv, "hi")
    assert raised.value.status == 404
    assert alice.history(conv) == []


# --- storage: the incomplete flag -------------------------------------------------------------


def test_incomplete_flag_is_bound_to_the_ciphertext(auth: AuthActions, app: Flask) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    assert auth.send(conv, "hello").status_code == 201
    with open_database(app) as db:
        db.execute("UPDATE messages SET status = 'incomplete' WHERE role = 'assistant'")
    # Flipping the flag breaks the record: it does not open.
    assert_error(auth.http.get(messages_path(conv)), 500, "integrity_error")


def test_migrating_a_version_1_database_keeps_its_messages(tmp_path: Path) -> None:
    path = str(tmp_path / "old.sqlite3")
    conn = store.connect(path)
    with store.transaction(conn):
        for statement in statements(scripts()[0]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users VALUES ('u', 'old', 'old', 'scrypt$10$8$1', x'00', x'00', 't')")
    conn.execute("INSERT INTO conversations VALUES ('c', 'u', x'00', 1, 't')")
    conn.execute("INSERT INTO messages VALUES ('c', 0, 'm', 'user', x'01', '2026-01-02')")
    assert store.migrate(conn) == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION >= 3
    (message,) = store.page_messages(conn, "c", 10)
    assert message.status == records.COMPLETE and message.content == b"\x01"
    # Version 3: a conversation's last activity is its newest message's time.
    (conv,) = store.list_conversations(conn, "u", 10)
    assert (conv.updated_at, conv.starred) == ("2026-01-02", False)
    assert store.migrate(conn) == store.SCHEMA_VERSION  # idempotent
    conn.close()


# --- the event-stream codec -------------------------------------------------------------------


def test_sse_parse_follows_the_format() -> None:
    stream = (
        b': a comment\n\nevent: delta\ndata: {"a": 1}\n\ndata: line1\r\ndata: line2\r\n'
        b"\r\nid: 7\nretry: 10\ndata: x\n\nevent: done\ndata: unterminated"
    )
    assert list(protocol.parse([stream])) == [
        protocol.Event("delta", '{"a": 1}'),
        protocol.Event("message", "line1\nline2"),
        protocol.Event("message", "x"),
    ]


def test_sse_refuses_an_endless_line() -> None:
    with pytest.raises(ValueError, match="too long"):
        list(protocol.parse([b"data: " + b"x" * 100] * 5, max_line=300))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["delta", "done", "error"]),
            st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3),
        ),
        max_size=6,
    ),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_sse_round_trip_at_any_chunk_boundary(
    events: list[tuple[str, Any]], cuts: list[int]
) -> None:
    import json

    encoded = b"".join(protocol.encode(name, data) for name, data in events)
    pieces, start = [], 0
    for size in cuts * (len(encoded) // sum(cuts) + 1):
        pieces.append(encoded[start : start + size])
        start += size
    assert b"".join(pieces) == encoded
    decoded = [(e.event, json.loads(e.data)) for e in protocol.parse(pieces)]
    assert decoded == events


# --- a message sent at the same moment from another tab -------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_reply_answers_this_request_not_a_later_message(
    alice: ChatClient, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    from securechat.server import messages

    original = messages.append

    def other_tab_right_after(conv_id: str, role: str, content: str, *rest: Any,
                              **options: Any) -> Any:
        stored = original(conv_id, role, content, *rest, **options)
        if content == "mine":  # another tab's message lands before the history is read
            original(conv_id, "user", "from the other tab")
        return stored

    monkeypatch.setattr(messages, "append", other_tab_right_after)
    conv = alice.new_conversation()["id"]
    if streamed:
        reply = alice.stream(conv, "mine")
        list(reply)
        text = reply.text
    else:
        text = alice.send(conv, "mine")["reply"]["content"]
    assert text == "Echo: mine"


class _BrokenMidway:
    """A responder with a bug: one chunk, then an unexpected exception."""

    def reply(self, history: Any) -> str:
        raise RuntimeError("not used")

    def stream(self, history: Any) -> Any:
        yield "half a "
        raise RuntimeError("bug in the responder")


def test_unexpected_error_mid_stream_is_an_error_event(
    app: Flask, alice: ChatClient, caplog: pytest.LogCaptureFixture
) -> None:
    app.extensions["securechat.responder"] = _BrokenMidway()
    conv = alice.new_conversation()["id"]
    response, events = stream_events(alice, messages_path(conv), {"content": "go"})
    assert response.status_code == 200
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[-1][1] == {
        "error": {"code": "internal_error", "message": "Internal server error."}
    }
    history = alice.history(conv)
    assert [m["content"] for m in history] == ["go", "half a "]
    assert history[1]["incomplete"] is True
    assert "bug in the responder" not in response.text
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)
