"""Deltas that arrive close together leave as one event; none is held for a later one.

Counted and ordered, never timed: a fast backend gives fewer events than chunks with the
same text; a backend that sends its next chunk only once the client has the previous one
(a lockstep ``gate``) proves every delta left without waiting for the next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from securechat import ApiError, ChatClient
from securechat.errors import ConfigError
from securechat.server.coalesce import coalesced
from securechat.settings import load
from securechat.testing import FakeOpenAI, chunks_of

from .fake_backend import new_api_key, openai_settings, stream_events, wait_for
from .served import Served, serve_env

LONG = " ".join(f"w{i}" for i in range(400))
SHORT = " ".join(f"s{i}" for i in range(20))  # lockstep: each chunk may wait the window
PASSWORD = "correct horse battery"


# --- the function ---------------------------------------------------------------------


def test_window_zero_passes_each_chunk_as_it_is() -> None:
    assert list(coalesced(iter(["a", "b", "c"]), 0)) == ["a", "b", "c"]


@examples(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), max_size=60))
def test_order_and_text_are_kept(chunks: list[str]) -> None:
    out = list(coalesced(iter(chunks), 0.01))
    assert "".join(out) == "".join(chunks) and all(out) and len(out) <= len(chunks)
    assert out[:1] == chunks[:1]  # the first chunk is never held for others


def test_chunks_that_come_at_once_are_merged() -> None:
    chunks = [f"{i} " for i in range(500)]
    out = list(coalesced(iter(chunks), 0.05))
    assert "".join(out) == "".join(chunks) and out[0] == "0 " and len(out) < len(chunks)


def test_an_error_comes_after_every_chunk_before_it() -> None:
    def failing() -> Iterator[str]:
        yield from ("a", "b", "c")
        raise ValueError("backend broke")

    got: list[str] = []
    with pytest.raises(ValueError, match="backend broke"):
        for chunk in coalesced(failing(), 0.05):
            got.append(chunk)
    assert "".join(got) == "abc"


def test_each_chunk_leaves_before_the_next_is_made() -> None:
    received: list[str] = []
    held: list[int] = []
    cond = threading.Condition()

    def lockstep() -> Iterator[str]:
        for i in range(10):
            with cond:
                # The next chunk is made only once the reader has the previous one.
                if not cond.wait_for(lambda i=i: len(received) >= i, timeout=20):
                    held.append(i)
            yield f"c{i} "

    for chunk in coalesced(lockstep(), 0.05):
        with cond:
            received.append(chunk)
            cond.notify_all()
    assert received == [f"c{i} " for i in range(10)] and held == []


def test_closing_early_closes_the_backend_stream() -> None:
    closed = threading.Event()

    def endless() -> Iterator[str]:
        try:
            while True:
                yield "x"
        finally:
            closed.set()

    reader = coalesced(endless(), 0.01)
    assert next(reader).startswith("x")
    next(reader)
    reader.close()
    assert closed.wait(20)


@pytest.mark.parametrize("value", [-0.01, 0.051, 1, "fast"])
def test_the_window_is_validated(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match="STREAM_COALESCE_WINDOW"):
        load(tmp_path, {"STREAM_COALESCE_WINDOW": value})


def test_the_window_from_the_environment(tmp_path: Path) -> None:
    env = {"SECURECHAT_STREAM_COALESCE_WINDOW": "0.02"}
    assert load(tmp_path, environ=env).STREAM_COALESCE_WINDOW == 0.02
    with pytest.raises(ConfigError, match="between 0 and 0.05"):
        load(tmp_path, environ={"SECURECHAT_STREAM_COALESCE_WINDOW": "0.5"})


# --- through the app, in threads (BackgroundServer) -------------------------------------


@pytest.fixture
def settings(settings: dict[str, Any], fake: FakeOpenAI, key: str) -> dict[str, Any]:
    return openai_settings(settings, fake, key, STREAM_COALESCE_WINDOW=0.05)


def _delta_texts(events: list[tuple[str, Any]]) -> list[str]:
    return [data["content"] for name, data in events if name == "delta"]


def test_a_fast_backend_gives_fewer_events_same_text(alice: ChatClient,
                                                     fake: FakeOpenAI) -> None:
    fake.reply = lambda messages: LONG
    conv = alice.new_conversation()["id"]
    _, events = stream_events(alice, f"/api/conversations/{conv}/messages", {"content": "go"})
    deltas = _delta_texts(events)
    assert "".join(deltas) == LONG == events[-1][1]["content"] and events[-1][0] == "done"
    assert len(deltas) < len(chunks_of(LONG))
    assert alice.history(conv)[-1]["content"] == LONG


# --- through `python -m securechat serve` (gevent) --------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeOpenAI]:
    def reply(messages: list[dict[str, Any]]) -> str:
        return SHORT if messages[-1]["content"] == "slowly" else LONG

    with FakeOpenAI(reply, api_key=new_api_key()) as fake:
        yield fake


@pytest.fixture(scope="module")
def served(backend: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    assert backend.api_key is not None
    env = serve_env(SECURECHAT_RESPONDER="openai", SECURECHAT_OPENAI_BASE_URL=backend.base_url,
                    SECURECHAT_OPENAI_API_KEY=backend.api_key,
                    SECURECHAT_STREAM_COALESCE_WINDOW="0.05")
    server = Served(tmp_path_factory.mktemp("coalesce") / "instance", env)
    yield server
    status, _, err = server.stop()
    assert status == 0 and "Traceback" not in err


@pytest.fixture(scope="module")
def user(served: Served) -> Iterator[ChatClient]:
    with ChatClient(served.url, timeout=60) as client:
        client.register("streamer", PASSWORD)
        client.login("streamer", PASSWORD)
        yield client


def test_served_fast_backend_gives_fewer_events_same_text(user: ChatClient,
                                                          backend: FakeOpenAI) -> None:
    backend.gate = None
    conv = user.new_conversation()["id"]
    _, events = stream_events(user, f"/api/conversations/{conv}/messages", {"content": "go"})
    deltas = _delta_texts(events)
    assert "".join(deltas) == LONG == events[-1][1]["content"] and events[-1][0] == "done"
    assert len(deltas) < len(chunks_of(LONG))


def test_served_slow_backend_each_delta_arrives_before_the_next_is_made(
        user: ChatClient, backend: FakeOpenAI) -> None:
    received: list[str] = []
    held: list[int] = []
    cond = threading.Condition()

    def gate(index: int) -> None:
        with cond:
            if not cond.wait_for(lambda: len(received) >= index, timeout=20):
                held.append(index)

    backend.gate = gate
    try:
        conv = user.new_conversation()["id"]
        reply = user.stream(conv, "slowly")
        for chunk in reply:
            with cond:
                received.append(chunk)
                cond.notify_all()
    finally:
        backend.gate = None
    assert received == chunks_of(SHORT) and held == []
    assert reply.message is not None and reply.message["content"] == SHORT


def test_served_cut_reply_is_kept_incomplete_after_its_deltas(user: ChatClient,
                                                              backend: FakeOpenAI) -> None:
    backend.gate = None
    backend.fail_next("cut")
    conv = user.new_conversation()["id"]
    reply = user.stream(conv, "cut me")
    with pytest.raises(ApiError, match="closed the connection"):
        list(reply)
    kept = wait_for(lambda: [m for m in user.history(conv) if m["role"] == "assistant"])
    assert reply.text and LONG.startswith(reply.text)
    assert kept[0]["content"] == reply.text and kept[0]["incomplete"] is True
