"""Fixtures in layers, as in Flask's tutorial (flaskr).

``settings`` (overrides; a test or module may add to it) → ``app`` (``create_app`` on a
temporary instance folder), then one of two layers on top of the same app:

* **in-process** (no socket, the default): ``http`` is the Flask test client, and ``auth``
  an :class:`~tests.helpers.AuthActions` on it (``register``, ``login`` returning the CSRF
  header, ``logout``, ``csrf``); ``make_auth`` gives more users, each on its own test client.
* **live** (only where the network is the point: the ChatClient, real sockets, streams,
  threads, the fake backend over HTTP, browsers): ``server`` serves the app on
  127.0.0.1 (:class:`~securechat.BackgroundServer`); ``make_client`` makes ChatClients
  against it, ``client`` is one not logged in, ``make_user`` registers and logs one in,
  ``alice`` and ``bob`` are two such users.

The Flask test client is called ``http`` (not flaskr's ``client``) because ``client``,
``alice`` and ``bob`` have always been live ChatClients here. Shared constants and
helpers live in ``tests/helpers.py``; ``FAST`` and ``PASSWORD`` are imported here too,
for modules that still import them from this file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from securechat import BackgroundServer, ChatClient, create_app
from securechat.testing import FakeOpenAI

from .helpers import FAST, PASSWORD, AuthActions, unique_name


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


# --- in-process: the Flask test client -----------------------------------------------


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    """The app's test client: requests without a socket."""
    return app.test_client()


@pytest.fixture
def auth(http: FlaskClient) -> AuthActions:
    """Register, log in and out through ``http``; it keeps the CSRF header."""
    return AuthActions(http)


@pytest.fixture
def make_auth(app: Flask) -> Callable[[], AuthActions]:
    """Factory of further users (browsers), each on a test client of its own."""
    return lambda: AuthActions(app.test_client())


# --- live: the app over real HTTP on 127.0.0.1 ---------------------------------------


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
