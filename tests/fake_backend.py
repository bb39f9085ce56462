"""Helpers shared by the AI-backend and streaming tests (the fake itself is securechat.testing)."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from securechat import ChatClient, protocol
from securechat.backends import BackendTimeout, BackendUnavailable, Turn
from securechat.testing import FakeOpenAI


def new_api_key() -> str:
    """A fresh random key per test: finding it anywhere it must not be means a leak."""
    return "sk-test-" + secrets.token_urlsafe(24)


def openai_settings(base: dict[str, Any], fake: FakeOpenAI, key: str | None,
                    **extra: Any) -> dict[str, Any]:
    """App overrides pointing the responder at ``fake``; quick timeouts, tiny backoff."""
    return {**base, "RESPONDER": "openai", "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_MODEL": "fake-model", "OPENAI_API_KEY": key, "OPENAI_READ_TIMEOUT": 1.5,
            "OPENAI_CONNECT_TIMEOUT": 2, "OPENAI_RETRY_BACKOFF": 0.01, **extra}


def free_port() -> int:
    """A port nothing listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stream_events(client: ChatClient, path: str, body: Any = None,
                  **headers: str) -> tuple[requests.Response, list[tuple[str, Any]]]:
    """POST with ``Accept: text/event-stream``; return the response and its decoded events."""
    sent = {"Accept": protocol.CONTENT_TYPE, "X-CSRF-Token": client.csrf_token or "", **headers}
    with client.http.post(client.base_url + path, json=body, headers=sent, timeout=30,
                          stream=True) as response:
        if not response.headers["Content-Type"].startswith(protocol.CONTENT_TYPE):
            return response, []
        events = [(e.event, json.loads(e.data))
                  for e in protocol.parse(protocol.iter_body(response))]
    return response, events


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll until ``condition()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class Flaky:
    """A responder that fails (``mode`` "down" or "midway") until it is mended."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def reply(self, history: list[Turn]) -> str:
        if self.mode != "ok":
            raise BackendUnavailable("The AI backend cannot be reached.")
        return "Mended: " + history[-1]["content"]

    def stream(self, history: list[Turn]) -> Iterator[str]:
        if self.mode == "down":
            raise BackendUnavailable("The AI backend cannot be reached.")
        yield "Partial "
        if self.mode == "midway":
            raise BackendTimeout("The AI backend took too long.")
        yield "answer"
