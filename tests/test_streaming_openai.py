"""Streaming against a fake OpenAI-compatible backend: relaying, failures, disconnects."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from securechat import ApiError, BackgroundServer, ChatClient, create_app
from securechat.testing import FakeOpenAI, chunks_of

from .fake_backend import openai_settings, stream_events, wait_for

LONG_REPLY = " ".join(f"word{i}" for i in range(200))


def messages_path(conv_id: str) -> str:
    return f"/api/conversations/{conv_id}/messages"


def assert_error_object(data: Any, code: str) -> None:
    """The contract's error object, and nothing else."""
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}
    assert data["error"]["code"] == code and data["error"]["message"]


# --- a fake OpenAI-compatible backend ---------------------------------------------------------


@pytest.fixture
def settings(settings: dict[str, Any], fake: FakeOpenAI, key: str) -> dict[str, Any]:
    return openai_settings(settings, fake, key)


def test_backend_chunks_are_relayed_one_event_each(app: Flask, alice: ChatClient,
                                                   fake: FakeOpenAI) -> None:
    app.config["STREAM_COALESCE_WINDOW"] = 0  # coalescing off: the chunks as they came
    conv = alice.new_conversation()["id"]
    _, events = stream_events(alice, messages_path(conv), {"content": "relay me"})
    expected = chunks_of(fake.reply([{"role": "system", "content": ""},
                                     {"role": "user", "content": "relay me"}]))
    assert [d["content"] for n, d in events if n == "delta"] == expected
    assert events[-1][0] == "done" and events[-1][1]["content"] == "".join(expected)
    assert fake.requests[-1]["body"]["stream"] is True


@pytest.mark.parametrize("mode,code,partial", [
    ("error", "backend_bad_response", False),
    ("garbage", "backend_bad_response", False),
    ("drop", "backend_bad_response", False),
    ("stall", "backend_timeout", False),
    ("cut", "backend_bad_response", True),
])
def test_backend_failure_is_an_error_event(alice: ChatClient, fake: FakeOpenAI, key: str,
                                           mode: str, code: str, partial: bool) -> None:
    conv = alice.new_conversation()["id"]
    fake.fail_next(mode)
    response, events = stream_events(alice, messages_path(conv), {"content": f"try {mode}"})
    assert response.status_code == 200
    assert events[-1][0] == "error" and [n for n, _ in events[:-1]] == ["delta"] * (
        len(events) - 1)
    assert_error_object(events[-1][1], code)
    assert key not in json.dumps(events)
    history = alice.history(conv)
    assert history[0]["content"] == f"try {mode}"  # stored before the backend was asked
    streamed = "".join(d["content"] for n, d in events if n == "delta")
    if partial:
        # What was generated is kept, marked incomplete.
        assert streamed and history[1] == {**history[1], "content": streamed, "incomplete": True}
    else:
        assert streamed == "" and len(history) == 1
    assert len(fake.requests) == 1
    # Asking again (streamed too) answers the same message; the cut reply stays marked.
    _, again = stream_events(alice, f"/api/conversations/{conv}/reply")
    assert again[-1][0] == "done" and f"try {mode}" in again[-1][1]["content"]
    assert fake.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": f"try {mode}"}


@pytest.mark.parametrize("mode,status", [("error", 502), ("stall", 504)])
def test_client_stream_raises_api_error_with_status(alice: ChatClient, fake: FakeOpenAI,
                                                    mode: str, status: int) -> None:
    conv = alice.new_conversation()["id"]
    fake.fail_next(mode)
    reply = alice.stream(conv, "hi")
    with pytest.raises(ApiError) as raised:
        list(reply)
    assert raised.value.status == status and raised.value.message.startswith("The AI backend")
    assert reply.message is None


def test_client_stream_keeps_partial_text_on_a_cut(alice: ChatClient, fake: FakeOpenAI) -> None:
    conv = alice.new_conversation()["id"]
    fake.fail_next("cut")
    reply = alice.stream(conv, "a b c d e f")
    received: list[str] = []
    with pytest.raises(ApiError, match="closed the connection"):
        for chunk in reply:
            received.append(chunk)
    assert received and reply.text == "".join(received)
    assert alice.history(conv)[-1] == {**alice.history(conv)[-1], "content": reply.text,
                                       "incomplete": True}


def test_reply_route_only_when_something_is_unanswered(alice: ChatClient, bob: ChatClient,
                                                       fake: FakeOpenAI) -> None:
    conv = alice.new_conversation()["id"]
    with pytest.raises(ApiError) as raised:
        alice.retry(conv)  # empty conversation
    assert (raised.value.status, raised.value.code) == (409, "nothing_to_answer")
    alice.send(conv, "hi")
    with pytest.raises(ApiError) as raised:
        alice.retry(conv)  # already answered
    assert raised.value.status == 409
    with pytest.raises(ApiError) as raised:
        bob.retry(conv)  # not bob's
    assert raised.value.status == 404
    response = alice.http.post(f"{alice.base_url}/api/conversations/{conv}/reply", timeout=30)
    assert response.status_code == 403  # no CSRF header
    response = alice.http.get(f"{alice.base_url}/api/conversations/{conv}/reply", timeout=30)
    assert response.status_code == 405 and set(response.json()) == {"error"}
    assert len(alice.history(conv)) == 2


# --- the client goes away mid-stream --------------------------------------------------------


@pytest.fixture
def slow_fake(key: str) -> Iterator[FakeOpenAI]:
    def reply(messages: list[dict[str, Any]]) -> str:
        return "short and sweet" if messages[-1]["content"] == "short?" else LONG_REPLY

    with FakeOpenAI(reply, api_key=key, chunk_delay=0.02) as backend:
        yield backend


def _incomplete_reply(client: ChatClient, conv: str) -> dict[str, Any] | None:
    history = client.history(conv)
    return history[-1] if history[-1]["role"] == "assistant" else None


def test_disconnect_keeps_what_was_generated(settings: dict[str, Any], tmp_path: Path,
                                             slow_fake: FakeOpenAI, key: str,
                                             caplog: pytest.LogCaptureFixture,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(openai_settings(settings, slow_fake, key), instance_path=tmp_path / "i")
    with BackgroundServer(app) as srv, ChatClient(srv.url) as client:
        client.register("frank", "correct horse battery")
        client.login("frank", "correct horse battery")
        conv = client.new_conversation()["id"]
        reply = client.stream(conv, "tell me a long story")
        received = [chunk for chunk, _ in zip(reply, range(3), strict=False)]
        reply.close()
        kept = wait_for(lambda: _incomplete_reply(client, conv))
        assert kept["incomplete"] is True
        assert LONG_REPLY.startswith(kept["content"]) and len(kept["content"]) < len(LONG_REPLY)
        assert kept["content"].startswith("".join(received))
        # The backend's stream was closed too: it stopped generating.
        wait_for(lambda: slow_fake.cancelled == 1)
        # Not fed back to the model as if whole, and the message can be answered again.
        client.send(conv, "go on")
        shown = [m["content"] for m in slow_fake.requests[-1]["body"]["messages"]]
        assert kept["content"] not in shown and "tell me a long story" in shown
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "Traceback" not in capfd.readouterr().err


class Served:
    """`python -m securechat serve` (gevent) in a subprocess, pointed at a fake backend."""

    def __init__(self, instance: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "securechat", "serve", "--host", "127.0.0.1", "--port", "0",
             "--instance", str(instance)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if found is None:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.proc.stderr.read()!r}")
        self.url = found.group(1)

    def stop(self) -> str:
        """Stop it like Ctrl-C/SIGTERM would; return its stderr."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


def test_disconnect_under_serve(tmp_path: Path, slow_fake: FakeOpenAI, key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update(SECURECHAT_KDF_LOG_N="10", SECURECHAT_RATELIMIT_ENABLED="false",
               SECURECHAT_RESPONDER="openai", SECURECHAT_OPENAI_BASE_URL=slow_fake.base_url,
               SECURECHAT_OPENAI_API_KEY=key)
    served = Served(tmp_path / "served", env)
    try:
        with ChatClient(served.url) as client:
            client.register("grace", "correct horse battery")
            client.login("grace", "correct horse battery")
            conv = client.new_conversation()["id"]
            whole = "".join(client.stream(conv, "short?"))  # chunked encoding under serve
            assert whole == "short and sweet"
            reply = client.stream(conv, "again, then I leave")
            received = [chunk for chunk, _ in zip(reply, range(3), strict=False)]
            reply.close()
            kept = wait_for(lambda: _incomplete_reply(client, conv))
            assert kept.get("incomplete") is True and kept["content"].startswith("".join(received))
            wait_for(lambda: slow_fake.cancelled == 1)
    finally:
        err = served.stop()
    assert "Traceback" not in err and key not in err


def test_stream_opens_before_the_backend_answers(alice: ChatClient, fake: FakeOpenAI) -> None:
    conv = alice.new_conversation()["id"]
    fake.fail_next("stall")  # silent until released
    reply = alice.stream(conv, "are you thinking?")  # returns: headers came at once
    assert alice.history(conv)[-1]["content"] == "are you thinking?"
    fake.release()
    assert "are you thinking?" in "".join(reply) and reply.message is not None
