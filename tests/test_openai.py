"""The OpenAI-compatible responder against a real local fake backend, over real HTTP."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from securechat import (
    ApiError,
    BackgroundServer,
    ChatClient,
    ConfigError,
    SecureChatError,
    create_app,
    create_app_from_env,
)
from securechat.backends import (
    BackendBadResponse,
    BackendTimeout,
    BackendUnavailable,
    OpenAIResponder,
    Turn,
    make_responder,
    trim_history,
)
from securechat.testing import FakeOpenAI, chunks_of

from .fake_backend import free_port, new_api_key, openai_settings

# --- fixtures: a fake backend, and the app pointed at it ---------------------------------


@pytest.fixture
def settings(settings: dict[str, Any], fake: FakeOpenAI, key: str) -> dict[str, Any]:
    return openai_settings(settings, fake, key)


@pytest.fixture
def conv(alice: ChatClient) -> str:
    return alice.new_conversation()["id"]


def user(text: str) -> Turn:
    return Turn(role="user", content=text)


def assistant(text: str) -> Turn:
    return Turn(role="assistant", content=text)


def last_unanswered(client: ChatClient, conv_id: str, content: str) -> None:
    """The user's message is stored, and nothing (complete) answers it."""
    history = client.history(conv_id)
    users = [m for m in history if m["role"] == "user"]
    assert users[-1]["content"] == content
    after = history[history.index(users[-1]) + 1:]
    assert all(m.get("incomplete") for m in after)


# --- replies -------------------------------------------------------------------------------


def test_reply_comes_from_the_backend(alice: ChatClient, conv: str, fake: FakeOpenAI,
                                      app: Flask) -> None:
    result = alice.send(conv, "What is 2 + 2?")
    assert result["reply"]["content"] == fake.reply(
        [{"role": "system", "content": ""}, {"role": "user", "content": "What is 2 + 2?"}])
    body = fake.requests[-1]["body"]
    assert body["model"] == "fake-model" and body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": app.config["SYSTEM_PROMPT"]},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    assert alice.history(conv)[-1] == result["reply"]


def test_history_is_sent_with_roles(alice: ChatClient, conv: str, fake: FakeOpenAI) -> None:
    first = alice.send(conv, "one")["reply"]["content"]
    alice.send(conv, "two")
    assert fake.requests[-1]["body"]["messages"][1:] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "two"},
    ]


def test_system_prompt_is_configurable_and_can_be_off(settings: dict[str, Any], tmp_path: Path,
                                                      fake: FakeOpenAI) -> None:
    for prompt, expected in [("Speak like a pirate.", "Speak like a pirate."), ("", None)]:
        app = create_app({**settings, "SYSTEM_PROMPT": prompt}, instance_path=tmp_path / prompt)
        responder = app.extensions["securechat.responder"]
        responder.reply([user("hi")])
        first = fake.requests[-1]["body"]["messages"][0]
        assert (first["content"] if first["role"] == "system" else None) == expected


# --- the API key ---------------------------------------------------------------------------


def test_key_is_a_bearer_header(alice: ChatClient, conv: str, fake: FakeOpenAI, key: str) -> None:
    alice.send(conv, "hello")
    assert fake.requests[-1]["authorization"] == f"Bearer {key}"


def test_key_and_prompt_never_reach_logs_or_error_bodies(
        alice: ChatClient, conv: str, fake: FakeOpenAI, key: str, app: Flask,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_prompt = "my diagnosis is confidential-7731"
    fake.fail_next("error", "error")  # its body quotes the Authorization header and prompt
    response = alice.http.post(f"{alice.base_url}/api/conversations/{conv}/messages",
                               json={"content": secret_prompt},
                               headers={"X-CSRF-Token": alice.csrf_token}, timeout=30)
    assert response.status_code == 502 and response.json()["error"]["code"] == \
        "backend_bad_response"
    with pytest.raises(ApiError) as raised:
        list(alice.stream(conv, secret_prompt))
    shown = response.text + str(raised.value) + repr(app.extensions["securechat.responder"])
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert any("HTTP 500" in r.getMessage() for r in caplog.records)  # the failure is logged
    for text in (shown, logged):
        assert key not in text and key[8:20] not in text
        assert secret_prompt not in text
    assert fake.requests[-1]["authorization"] == f"Bearer {key}"


def test_wrong_key_is_502_saying_so(settings: dict[str, Any], tmp_path: Path) -> None:
    with FakeOpenAI(api_key=new_api_key()) as other:
        app = create_app(openai_settings(settings, other, "sk-wrong"), instance_path=tmp_path)
        with pytest.raises(BackendBadResponse, match="API key"):
            app.extensions["securechat.responder"].reply([user("hi")])


def test_settings_from_dotenv_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    from_file, from_env = new_api_key(), new_api_key()
    fake = FakeOpenAI().start()  # accepts any key: the test reads which one arrived
    request.addfinalizer(fake.stop)
    Path(".env").write_text(  # the tests run in a fresh cwd (conftest)
        f"SECURECHAT_RESPONDER=openai\nSECURECHAT_OPENAI_BASE_URL={fake.base_url}\n"
        f"SECURECHAT_OPENAI_MODEL=from-dotenv\nSECURECHAT_OPENAI_API_KEY={from_file}\n")
    app = create_app_from_env({"KDF_LOG_N": 10}, instance_path=tmp_path / "a")
    app.extensions["securechat.responder"].reply([user("hi")])
    assert fake.requests[-1]["authorization"] == f"Bearer {from_file}"
    assert fake.requests[-1]["body"]["model"] == "from-dotenv"
    monkeypatch.setenv("SECURECHAT_OPENAI_API_KEY", from_env)  # the environment wins
    app = create_app_from_env({"KDF_LOG_N": 10}, instance_path=tmp_path / "b")
    app.extensions["securechat.responder"].reply([user("hi")])
    assert fake.requests[-1]["authorization"] == f"Bearer {from_env}"


def test_key_over_plain_http_to_a_remote_host_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="plain http") as raised:
        OpenAIResponder("http://models.example.com/v1", "m", key)
    assert key not in str(raised.value)
    # https, a loopback backend, or no key at all are fine.
    OpenAIResponder("https://models.example.com/v1", "m", key)
    OpenAIResponder("http://[::1]:11434/v1", "m", key)
    OpenAIResponder("http://192.168.1.5:11434/v1", "m", None)


@pytest.mark.parametrize("overrides,match", [
    ({"RESPONDER": "gpt"}, "one of echo, openai"),
    ({"RESPONDER": "openai", "OPENAI_BASE_URL": "ftp://x/v1"}, "http"),
    ({"RESPONDER": "openai", "OPENAI_BASE_URL": "localhost:11434"}, "http"),
    ({"RESPONDER": "openai", "OPENAI_MODEL": ""}, "OPENAI_MODEL"),
])
def test_bad_backend_settings_are_refused(settings: dict[str, Any], tmp_path: Path,
                                          overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_app({**settings, **overrides}, instance_path=tmp_path)


def test_echo_stays_the_default() -> None:
    from securechat.backends import EchoResponder
    from securechat.settings import Settings

    assert isinstance(make_responder(Settings().as_config()), EchoResponder)


# --- failures: clear, and nothing lost -------------------------------------------------------


@pytest.mark.parametrize("mode,status,code", [
    ("error", 502, "backend_bad_response"),
    ("garbage", 502, "backend_bad_response"),
    ("drop", 502, "backend_bad_response"),
    ("cut", 502, "backend_bad_response"),
    ("stall", 504, "backend_timeout"),
])
def test_backend_failure_keeps_the_message(alice: ChatClient, conv: str, fake: FakeOpenAI,
                                           mode: str, status: int, code: str) -> None:
    fake.fail_next(mode)
    with pytest.raises(ApiError) as raised:
        alice.send(conv, f"please survive {mode}")
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.message.startswith("The AI backend")
    # Sent once: not retried after the request left (the backend may be generating).
    assert len(fake.requests) == 1
    last_unanswered(alice, conv, f"please survive {mode}")
    # The way back: ask again for the same message, which is not stored twice.
    reply = alice.retry(conv)["reply"]
    assert f"please survive {mode}" in reply["content"]
    assert [m["content"] for m in alice.history(conv)].count(f"please survive {mode}") == 1
    assert fake.requests[-1]["body"]["messages"][-1]["content"] == f"please survive {mode}"


def test_backend_down_is_503_then_retry_works(settings: dict[str, Any], tmp_path: Path) -> None:
    from securechat import BackgroundServer

    port = free_port()
    app = create_app({**settings, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"},
                     instance_path=tmp_path / "down")
    with BackgroundServer(app) as srv, ChatClient(srv.url) as client:
        client.register("carol", "correct horse battery")
        client.login("carol", "correct horse battery")
        conv_id = client.new_conversation()["id"]
        with pytest.raises(ApiError) as raised:
            client.send(conv_id, "anyone there?")
        assert (raised.value.status, raised.value.code) == (503, "backend_unavailable")
        assert client.history(conv_id)[-1]["content"] == "anyone there?"
        with FakeOpenAI(api_key=settings["OPENAI_API_KEY"], port=port):
            assert "anyone there?" in client.retry(conv_id)["reply"]["content"]


def test_http_status_mapping(fake: FakeOpenAI, key: str) -> None:
    responder = OpenAIResponder(fake.base_url, "m", key, read_timeout=5)
    fake.fail_next("error")
    with pytest.raises(BackendBadResponse):
        responder.reply([user("x")])
    with pytest.raises(BackendBadResponse, match="API key"):
        OpenAIResponder(fake.base_url, "m", "sk-other", read_timeout=5).reply([user("x")])


# --- retries: connection errors only ---------------------------------------------------------


class Sleeps:
    """An injected sleep that records delays and can run an action on the first one."""

    def __init__(self, on_first: Any = None) -> None:
        self.delays: list[float] = []
        self.on_first = on_first

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) == 1 and self.on_first is not None:
            self.on_first()


def test_refused_connection_is_retried_with_backoff_until_it_works(key: str) -> None:
    port = free_port()
    late = FakeOpenAI(api_key=key, port=port)
    sleeps = Sleeps(on_first=late.start)  # the backend comes up during the first backoff
    responder = OpenAIResponder(f"http://127.0.0.1:{port}/v1", "m", key, max_attempts=3,
                                backoff=0.25, sleep=sleeps)
    try:
        assert "hello" in responder.reply([user("hello")])
    finally:
        late.stop()
    assert sleeps.delays == [0.25]
    assert len(late.requests) == 1


def test_refused_connection_gives_up_after_max_attempts(key: str) -> None:
    sleeps = Sleeps()
    responder = OpenAIResponder(f"http://127.0.0.1:{free_port()}/v1", "m", key,
                                max_attempts=4, backoff=0.5, sleep=sleeps)
    with pytest.raises(BackendUnavailable):
        responder.reply([user("x")])
    assert sleeps.delays == [0.5, 1.0, 2.0]  # exponential
    with pytest.raises(BackendUnavailable):
        list(responder.stream([user("x")]))


@pytest.mark.parametrize("mode,error", [
    ("error", BackendBadResponse),
    ("garbage", BackendBadResponse),
    ("drop", BackendBadResponse),
    ("cut", BackendBadResponse),
    ("stall", BackendTimeout),
])
@pytest.mark.parametrize("streamed", [False, True])
def test_no_retry_once_the_request_was_sent(fake: FakeOpenAI, key: str, mode: str,
                                            error: type[Exception], streamed: bool) -> None:
    sleeps = Sleeps()
    responder = OpenAIResponder(fake.base_url, "m", key, read_timeout=0.5, max_attempts=5,
                                sleep=sleeps)
    fake.fail_next(mode)
    with pytest.raises(error):
        if streamed:
            list(responder.stream([user("x")]))
        else:
            responder.reply([user("x")])
    assert len(fake.requests) == 1 and sleeps.delays == []


@pytest.mark.parametrize("mode,code", [
    ("error", "backend_bad_response"),
    ("garbage", "backend_bad_response"),
    ("drop", "backend_bad_response"),
    ("cut", "backend_bad_response"),
    ("stall", "backend_timeout"),
])
@pytest.mark.parametrize("streamed", [False, True])
def test_each_failure_is_logged_once_for_the_operator(
        fake: FakeOpenAI, key: str, mode: str, code: str, streamed: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="securechat")
    responder = OpenAIResponder(fake.base_url, "m", key, read_timeout=0.5)
    fake.fail_next(mode)
    with pytest.raises(BackendBadResponse if code == "backend_bad_response" else BackendTimeout):
        if streamed:
            list(responder.stream([user("a private question")]))
        else:
            responder.reply([user("a private question")])
    (record,) = [r for r in caplog.records if r.name == "securechat.backends.openai"]
    assert record.levelno == logging.WARNING and code in record.getMessage()
    assert "private question" not in record.getMessage() and key not in record.getMessage()


# --- what the backend is shown --------------------------------------------------------------


@contextlib.contextmanager
def chatting(settings: dict[str, Any], folder: Path) -> Iterator[tuple[Flask, ChatClient, str]]:
    """An app on ``settings`` served over HTTP, a logged-in client and a new conversation."""
    app = create_app(settings, instance_path=folder)
    with BackgroundServer(app) as srv, ChatClient(srv.url) as client:
        client.register("dave", "correct horse battery")
        client.login("dave", "correct horse battery")
        yield app, client, client.new_conversation()["id"]


def test_history_window_bounds_messages(settings: dict[str, Any], tmp_path: Path,
                                        fake: FakeOpenAI) -> None:
    with chatting({**settings, "HISTORY_WINDOW": 3}, tmp_path / "w") as (app, client, conv_id):
        for i in range(4):
            client.send(conv_id, f"message {i}")
        sent = fake.requests[-1]["body"]["messages"]
        # The system prompt, then the 3 newest messages: messages 0 and 1 are not shown.
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        assert [m["content"] for m in sent if m["role"] == "user"] == ["message 2", "message 3"]
        app.config["HISTORY_WINDOW"] = 4
        client.send(conv_id, "message 4")
        sent = fake.requests[-1]["body"]["messages"]
        # The 4 newest start with a reply, which is dropped: the window starts with the user.
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        assert [m["content"] for m in sent if m["role"] == "user"] == ["message 3", "message 4"]


def test_history_window_bounds_characters(settings: dict[str, Any], tmp_path: Path,
                                          fake: FakeOpenAI) -> None:
    with chatting({**settings, "HISTORY_MAX_CHARS": 400}, tmp_path / "c") as (_, client, conv_id):
        for i in range(5):
            client.send(conv_id, f"{i}" * 150)
        sent = fake.requests[-1]["body"]["messages"][1:]
        assert sum(len(m["content"]) for m in sent) <= 400
        assert sent[-1]["content"] == "4" * 150 and sent[0]["role"] == "user"
        # The newest message always goes, whole, however long.
        client.send(conv_id, "x" * 1000)
        assert fake.requests[-1]["body"]["messages"][1:] == [{"role": "user",
                                                             "content": "x" * 1000}]


@pytest.mark.parametrize("turns,max_messages,max_chars,expected", [
    ([], 5, 100, []),
    ([user("a")], 5, 100, [user("a")]),
    ([user("a"), assistant("b"), user("c")], 2, 100, [user("c")]),
    ([user("a"), assistant("b"), user("c")], 3, 100, [user("a"), assistant("b"), user("c")]),
    ([user("aaaa"), assistant("bb"), user("cc")], 5, 4, [user("cc")]),
    ([user("aa"), assistant("bb"), user("cc")], 5, 6, [user("aa"), assistant("bb"), user("cc")]),
    ([user("long" * 10)], 5, 3, [user("long" * 10)]),
    ([user("a"), user("b")], 5, 100, [user("a"), user("b")]),
])
def test_trim_history(turns: list[Turn], max_messages: int, max_chars: int,
                      expected: list[Turn]) -> None:
    assert trim_history(turns, max_messages, max_chars) == expected


_turns = st.lists(st.builds(Turn, role=st.sampled_from(["user", "assistant"]),
                            content=st.text(max_size=30)), max_size=12)


@given(_turns, st.integers(1, 10), st.integers(1, 200))
def test_trim_history_properties(turns: list[Turn], max_messages: int, max_chars: int) -> None:
    kept = trim_history(turns, max_messages, max_chars)
    assert kept == turns[len(turns) - len(kept):]  # a suffix: the newest, in order
    assert len(kept) <= max_messages
    if turns:
        assert kept and kept[-1] == turns[-1]
    if len(kept) > 1:
        assert kept[0]["role"] == "user"
        assert sum(len(t["content"]) for t in kept) <= max_chars


# --- at rest, answers of other shapes ---------------------------------------------------------


def test_stored_reply_is_encrypted_at_rest(alice: ChatClient, conv: str, app: Flask) -> None:
    marker = "zebra-unique-4417"
    reply = alice.send(conv, f"say {marker}")["reply"]
    assert marker in reply["content"]
    assert any(marker in m["content"] for m in alice.history(conv) if m["role"] == "assistant")
    database = Path(app.config["DATABASE"])
    with closing(sqlite3.connect(database)) as db, db:
        blobs = [row[0] for row in db.execute("SELECT content FROM messages")]
    assert blobs and all(isinstance(b, bytes) and marker.encode() not in b for b in blobs)
    for path in database.parent.glob(database.name + "*"):  # the WAL too
        assert marker.encode() not in path.read_bytes()


def test_server_that_ignores_stream_still_works(fake: FakeOpenAI, key: str) -> None:
    fake.fail_next("no_stream")
    chunks = list(OpenAIResponder(fake.base_url, "m", key).stream([user("hi")]))
    assert len(chunks) == 1 and "hi" in chunks[0]


def test_streamed_chunks_are_the_backends(fake: FakeOpenAI, key: str) -> None:
    chunks = list(OpenAIResponder(fake.base_url, "m", key).stream([user("a b c")]))
    assert chunks == chunks_of(fake.reply([{"role": "user", "content": "a b c"}]))
    assert fake.requests[-1]["body"]["stream"] is True


@pytest.mark.parametrize("body", [
    {"choices": []},
    {"choices": [{"message": {"content": None}}]},
    {"choices": [{"message": {"role": "assistant"}}]},
    {"error": {"message": "overloaded"}},
    ["not", "an", "object"],
])
def test_malformed_completion_is_bad_response(body: Any) -> None:
    from securechat.backends.wire import completion_text

    with pytest.raises(BackendBadResponse):
        completion_text(body)


@pytest.mark.parametrize("data", [
    '{"choices": [{"delta": {"content": 5}}]}',
    '{"choices": "nope"}',
    '{"error": {"message": "model crashed"}}',
    "[1, 2]",
    "{not json",
])
def test_malformed_stream_chunk_is_bad_response(data: str) -> None:
    from securechat.backends.wire import delta

    with pytest.raises(BackendBadResponse):
        delta(data)


def test_stream_chunk_without_text_is_skipped() -> None:
    from securechat.backends.wire import delta

    assert delta('{"choices": [{"delta": {"role": "assistant"}}]}') == ("", False)
    assert delta('{"choices": []}') == ("", False)
    assert delta('{"choices": [{"delta": {}, "finish_reason": "stop"}]}') == ("", True)


def test_fake_backend_lifecycle() -> None:
    fake = FakeOpenAI()
    with pytest.raises(SecureChatError):
        _ = fake.url  # not started
    with pytest.raises(ValueError, match="unknown failure modes"):
        fake.fail_next("explode")
    fake.start()
    try:
        with pytest.raises(SecureChatError):
            fake.start()
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
        assert "0 requests" in repr(fake)
    finally:
        fake.stop()
        fake.stop()  # twice is safe
    assert "stopped" in repr(fake)
    assert not [t for t in threading.enumerate() if t.name.startswith("securechat-fake-openai")]


# --- a reply cannot hold a server thread forever ------------------------------------------


def _long_reply(messages: Any) -> str:
    return " ".join(f"word{i}" for i in range(400))


def test_stream_is_cut_at_the_reply_deadline() -> None:
    with FakeOpenAI(_long_reply, chunk_delay=0.01) as backend:
        responder = OpenAIResponder(backend.base_url, "m", max_reply_seconds=0.3)
        got: list[str] = []
        with pytest.raises(BackendTimeout):
            for chunk in responder.stream([{"role": "user", "content": "go"}]):
                got.append(chunk)
    assert 0 < len(got) < 400  # some of it arrived, not all


def test_stream_is_cut_past_the_reply_length() -> None:
    with FakeOpenAI(_long_reply) as backend:
        responder = OpenAIResponder(backend.base_url, "m", max_reply_chars=100)
        got: list[str] = []
        with pytest.raises(BackendBadResponse):
            for chunk in responder.stream([{"role": "user", "content": "go"}]):
                got.append(chunk)
    assert sum(map(len, got)) <= 100


def test_whole_reply_past_the_length_is_refused() -> None:
    with FakeOpenAI(_long_reply) as backend:
        responder = OpenAIResponder(backend.base_url, "m", max_reply_chars=100)
        with pytest.raises(BackendBadResponse):
            responder.reply([{"role": "user", "content": "go"}])
