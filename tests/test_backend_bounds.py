"""The AI backend is bounded on every path: one deadline, one size bound, no detours.

A backend may be slow, chatty, huge, broken or redirecting; none of it may hold a server
thread past ``OPENAI_MAX_REPLY_SECONDS``, store more than ``OPENAI_MAX_REPLY_CHARS``,
buffer an unbounded body, turn into a 500, or send the key anywhere but the configured URL.
"""

from __future__ import annotations

import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from securechat import ChatClient, ConfigError
from securechat.backends import (
    BackendBadResponse,
    BackendError,
    BackendTimeout,
    OpenAIResponder,
    Turn,
)
from securechat.testing import FakeOpenAI

from .fake_backend import openai_settings, stream_events

GO: list[Turn] = [{"role": "user", "content": "go"}]


def _words(n: int) -> Callable[[Any], str]:
    return lambda _messages: " ".join(f"w{i}" for i in range(n))


def _drain(responder: OpenAIResponder) -> tuple[list[str], BaseException | None]:
    got: list[str] = []
    try:
        for chunk in responder.stream(GO):
            got.append(chunk)
    except BackendError as e:
        return got, e
    return got, None


# --- one wall-clock deadline, whatever the backend sends -----------------------------------


@pytest.mark.parametrize("mode", ["keepalive", "empty_deltas"])
def test_a_stream_that_says_nothing_is_cut_at_the_deadline(mode: str) -> None:
    # Keep-alive comments and empty deltas arrive well within the read timeout; only the
    # deadline can end such a stream. Without it, it lasts until the fake gives up (20 s).
    with FakeOpenAI(stall_seconds=20) as fake:
        fake.fail_next(mode)
        responder = OpenAIResponder(fake.base_url, "m", read_timeout=30, max_reply_seconds=0.5)
        started = time.monotonic()
        got, error = _drain(responder)
        elapsed = time.monotonic() - started
    assert isinstance(error, BackendTimeout) and got == []
    assert elapsed < 10, f"the stream lasted {elapsed:.1f} s past its 0.5 s deadline"


def test_a_whole_reply_has_the_deadline_too() -> None:
    # The fake stalls 3 s, then answers: within the read timeout, past the deadline.
    with FakeOpenAI(stall_seconds=3) as fake:
        fake.fail_next("stall")
        responder = OpenAIResponder(fake.base_url, "m", read_timeout=30, max_reply_seconds=0.5)
        with pytest.raises(BackendTimeout):
            responder.reply(GO)


class _Trickler(socketserver.ThreadingTCPServer):
    """A hostile backend: answers one byte at a time, each well within any read timeout."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, prefix: bytes, drip: bytes) -> None:
        self.prefix, self.drip, self.stop = prefix, drip, threading.Event()
        super().__init__(("127.0.0.1", 0), _TrickleHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _TrickleHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Trickler = self.server  # type: ignore[assignment]
        self.request.recv(65536)
        try:
            self.request.sendall(server.prefix)
            while not server.stop.wait(0.05):
                self.request.sendall(server.drip)
        except OSError:
            pass  # the client hung up: what the deadline is for


@pytest.fixture
def trickler(request: pytest.FixtureRequest) -> Iterator[_Trickler]:
    prefix, drip = request.param
    server = _Trickler(prefix, drip)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("trickler", [
    (b"HTTP/1.1 200 OK\r\n", b"X"),  # headers that never end
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999\r\n\r\n",
     b" "),  # a JSON body that never ends
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", b"1"),  # a chunk-size line that never ends
    # A proxy answering CONNECT (to an https backend) with headers that never end.
    (b"HTTP/1.1 200 Connection established\r\n", b"X"),
], indirect=True, ids=["headers", "json-body", "chunk-line", "proxy-tunnel"])
@pytest.mark.parametrize("path", ["reply", "stream"])
def test_a_trickling_backend_is_cut_at_the_deadline(trickler: _Trickler, path: str) -> None:
    url, proxy = trickler.base_url, None
    if b"Connection established" in trickler.prefix:
        url, proxy = "https://backend.invalid/v1", trickler.base_url.removesuffix("/v1")
    responder = OpenAIResponder(url, "m", read_timeout=30, max_reply_seconds=0.5,
                                max_attempts=1, proxy=proxy)
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        if path == "reply":
            responder.reply(GO)
        else:
            _, error = _drain(responder)
            raise error or AssertionError("the stream ended normally")
    assert time.monotonic() - started < 10


def test_no_deadline_thread_outlives_a_call() -> None:
    with FakeOpenAI() as fake:
        responder = OpenAIResponder(fake.base_url, "m")
        responder.reply(GO)
        _drain(responder)
    assert not [t for t in threading.enumerate() if t.name == "securechat-deadline"]


# --- one size bound, on every path --------------------------------------------------------


def test_a_stream_is_cut_at_the_character_bound_keeping_exactly_that_much() -> None:
    with FakeOpenAI(_words(400)) as fake:
        got, error = _drain(OpenAIResponder(fake.base_url, "m", max_reply_chars=100))
    assert isinstance(error, BackendBadResponse)
    assert len("".join(got)) == 100


@pytest.mark.parametrize("path", ["reply", "stream-answered-with-json"])
def test_a_whole_reply_past_the_bound_keeps_only_the_bound(path: str) -> None:
    # The review's case: 200,000 characters in one JSON completion were stored as complete.
    with FakeOpenAI(lambda _m: "x" * 200_000) as fake:
        responder = OpenAIResponder(fake.base_url, "m", max_reply_chars=1000)
        if path == "reply":
            with pytest.raises(BackendBadResponse) as cut:
                responder.reply(GO)
            kept = cut.value.partial
        else:
            fake.fail_next("no_stream")
            got, error = _drain(responder)
            assert isinstance(error, BackendBadResponse)
            kept = "".join(got)
    assert kept == "x" * 1000


def test_a_body_past_the_byte_bound_is_not_buffered() -> None:
    # 2 MB of JSON for a reply allowed 10 characters: refused once the bound is passed.
    with FakeOpenAI(lambda _m: "y" * 2_000_000) as fake:
        responder = OpenAIResponder(fake.base_url, "m", max_reply_chars=10)
        with pytest.raises(BackendBadResponse, match="too large"):
            responder.reply(GO)
    assert responder.max_body_bytes < 2_000_000


def test_chars_bound_holds_through_the_api(settings: dict[str, Any], tmp_path: Path) -> None:
    from securechat import BackgroundServer, create_app

    with FakeOpenAI(lambda _m: "z" * 5000) as fake:
        app = create_app(openai_settings(settings, fake, None, OPENAI_MAX_REPLY_CHARS=300),
                         instance_path=tmp_path / "i")
        with BackgroundServer(app) as server, ChatClient(server.url) as client:
            client.register("ada", "correct horse battery")
            client.login("ada", "correct horse battery")
            conv = client.new_conversation()["id"]
            with pytest.raises(Exception) as refused:
                client.send(conv, "json path")
            assert getattr(refused.value, "status", None) == 502
            fake.fail_next("no_stream")
            _, events = stream_events(client, f"/api/conversations/{conv}/messages",
                                      {"content": "stream path"})
            assert events[-1][0] == "error"
            kept = [m for m in client.history(conv) if m["role"] == "assistant"]
    assert [(len(m["content"]), m.get("incomplete")) for m in kept] == [(300, True)] * 2


# --- broken backends are 502s, never 500s -------------------------------------------------


def test_a_lone_surrogate_cuts_the_reply_there_and_keeps_what_came_before(
        settings: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from securechat import BackgroundServer, create_app

    with FakeOpenAI(_words(20)) as fake:
        app = create_app(openai_settings(settings, fake, None), instance_path=tmp_path / "i")
        with BackgroundServer(app) as server, ChatClient(server.url) as client:
            client.register("ada", "correct horse battery")
            client.login("ada", "correct horse battery")
            conv = client.new_conversation()["id"]
            fake.fail_next("surrogate")
            _, events = stream_events(client, f"/api/conversations/{conv}/messages",
                                      {"content": "stream"})
            fake.fail_next("surrogate")
            with pytest.raises(Exception) as failed:
                client.send(conv, "json")
            kept = [m for m in client.history(conv) if m["role"] == "assistant"]
    assert events[-1] == ("error", {"error": {"code": "backend_bad_response", "message":
                          "The AI backend sent text that is not valid Unicode; the reply was "
                          "cut there."}})
    assert getattr(failed.value, "status", None) == 502
    half = " ".join(f"w{i}" for i in range(20))
    assert len(kept) == 2 and all(m.get("incomplete") for m in kept)
    assert all(half.startswith(m["content"]) and m["content"] for m in kept)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # One line for each of the two failures, for the operator.
    assert len([r for r in caplog.records if "AI backend failure" in r.getMessage()]) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_json_nested_too_deeply_is_a_bad_response(stream: bool) -> None:
    with FakeOpenAI() as fake:
        fake.fail_next("nested")
        responder = OpenAIResponder(fake.base_url, "m")
        with pytest.raises(BackendBadResponse):
            if stream:
                _, error = _drain(responder)
                raise error or AssertionError("no error")
            responder.reply(GO)


# --- the key goes only where it is configured to ------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_redirects_are_not_followed(stream: bool, key: str) -> None:
    with FakeOpenAI() as fake:
        fake.fail_next("redirect")
        responder = OpenAIResponder(fake.base_url, "m", api_key=key)
        with pytest.raises(BackendBadResponse, match="redirect"):
            if stream:
                _, error = _drain(responder)
                raise error or AssertionError("no error")
            responder.reply(GO)
        assert fake.redirected == []


class _Recorder(socketserver.ThreadingTCPServer):
    """A 'proxy' that only records what reaches it, and answers nothing useful."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _RecordHandler)


class _RecordHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.received.append(self.request.recv(65536))  # type: ignore[attr-defined]
        self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_environment_proxies_and_netrc_are_not_trusted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, recorder: _Recorder, key: str) -> None:
    proxy = f"http://127.0.0.1:{recorder.server_address[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with FakeOpenAI() as fake:
        OpenAIResponder(fake.base_url, "m", api_key=key).reply(GO)
        OpenAIResponder(fake.base_url, "m").reply(GO)  # no key: netrc would add one
        assert [r["authorization"] for r in fake.requests] == [f"Bearer {key}", None]
    assert recorder.received == []


def test_an_explicit_proxy_is_used(recorder: _Recorder, key: str) -> None:
    proxy = f"http://127.0.0.1:{recorder.server_address[1]}"
    responder = OpenAIResponder("http://127.0.0.1:9/v1", "m", api_key=key, proxy=proxy,
                                max_attempts=1)
    with pytest.raises(BackendError):
        responder.reply(GO)
    assert len(recorder.received) == 1
    assert recorder.received[0].startswith(b"POST http://127.0.0.1:9/v1/chat/completions")


@pytest.mark.parametrize(("base", "proxy", "allowed"), [
    ("http://127.0.0.1:11434/v1", None, True),
    ("http://127.0.0.1:11434/v1", "http://127.0.0.1:3128", True),
    # The key would cross the network in clear to the proxy, or from it to the backend.
    ("http://127.0.0.1:11434/v1", "http://proxy.example:3128", False),
    ("http://127.0.0.1:11434/v1", "https://proxy.example:3128", False),
    ("http://backend.example/v1", "http://127.0.0.1:3128", False),
    ("http://backend.example/v1", None, False),
    # Over https the proxy only tunnels TLS: it never sees the key.
    ("https://api.example/v1", "http://proxy.example:3128", True),
])
def test_plain_http_key_check_covers_the_proxy(base: str, proxy: str | None, allowed: bool,
                                               key: str) -> None:
    if allowed:
        OpenAIResponder(base, "m", api_key=key, proxy=proxy)
    else:
        with pytest.raises(ConfigError, match="plain http"):
            OpenAIResponder(base, "m", api_key=key, proxy=proxy)


def test_proxy_setting_must_be_a_url(key: str) -> None:
    with pytest.raises(ConfigError, match="OPENAI_PROXY"):
        OpenAIResponder("https://api.example/v1", "m", api_key=key, proxy="socks://x")
