"""Fixtures in layers: settings → app → server → client → logged-in users."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from securechat import BackgroundServer, ChatClient, create_app
from securechat.testing import FakeOpenAI

# Tests may lower the KDF cost (the default may not): scrypt N=2^10 keeps them fast.
FAST = {"KDF_LOG_N": 10, "RATELIMIT_ENABLED": False}
PASSWORD = "correct horse battery"
_names = itertools.count()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SECURECHAT_* variable or stray .env of the developer leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("SECURECHAT_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A fresh instance folder (created by the app)."""
    return tmp_path / "instance"


@pytest.fixture
def settings() -> dict[str, Any]:
    """Overrides for the app under test; tests may add to it before `app` is built."""
    return dict(FAST)


@pytest.fixture
def app(settings: dict[str, Any], instance: Path) -> Flask:
    """A securechat app on a temporary instance folder."""
    return create_app(settings, instance_path=instance)


@pytest.fixture
def server(app: Flask) -> Iterator[BackgroundServer]:
    """The app served on 127.0.0.1 over real HTTP."""
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture
def make_client(server: BackgroundServer) -> Iterator[Callable[[], ChatClient]]:
    """Factory of ChatClients against the server, all closed afterwards."""
    made: list[ChatClient] = []

    def make() -> ChatClient:
        made.append(ChatClient(server.url, timeout=30))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[[], ChatClient]) -> ChatClient:
    """A client that is not logged in."""
    return make_client()


def unique_name(prefix: str = "user") -> str:
    """A fresh valid username."""
    return f"{prefix}{next(_names)}"


@pytest.fixture
def make_user(make_client: Callable[[], ChatClient]) -> Callable[..., ChatClient]:
    """Register and log in a new user; return their client."""

    def make(username: str | None = None, password: str = PASSWORD) -> ChatClient:
        c = make_client()
        name = username or unique_name()
        c.register(name, password)
        c.login(name, password)
        return c

    return make


@pytest.fixture
def alice(make_user: Callable[..., ChatClient]) -> ChatClient:
    """A logged-in user."""
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., ChatClient]) -> ChatClient:
    """Another logged-in user."""
    return make_user("bob")


@pytest.fixture
def key() -> str:
    """A fresh API key for the fake OpenAI-compatible backend."""
    from .fake_backend import new_api_key

    return new_api_key()


@pytest.fixture
def fake(key: str) -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible backend on 127.0.0.1 that requires ``key``."""
    with FakeOpenAI(api_key=key) as backend:
        yield backend
