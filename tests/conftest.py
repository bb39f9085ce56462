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

**The database.** ``settings`` carries ``DATABASE`` from the ``database`` fixture: ``None``
(SQLite in the instance folder) unless the module is marked ``every_store``
(``pytestmark = pytest.mark.every_store``), whose tests then run twice, ``[sqlite]`` and
``[postgres]``. Each PostgreSQL test gets a schema of its own inside a database created
for this run (dropped at the end) on the server at ``SECURECHAT_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``, used only to create and drop that
database). Without a reachable server those tests are skipped, saying why; under ``CI``
they fail. ``postgres_url`` gives PostgreSQL-only tests the same.

The Flask test client is called ``http`` (not flaskr's ``client``) because ``client``,
``alice`` and ``bob`` have always been live ChatClients here. Shared constants and
helpers live in ``tests/helpers.py``; ``FAST`` and ``PASSWORD`` are imported here too,
for modules that still import them from this file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from securechat import BackgroundServer, ChatClient, create_app
from securechat.store.postgres import shown
from securechat.testing import FakeOpenAI

from .helpers import FAST, PASSWORD, AuthActions, unique_name
from .redis_helpers import drop_prefix, new_prefix, reachable_redis_url

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_POSTGRES_URL = pytest.StashKey[str]()
_NO_POSTGRES = "PostgreSQL tests skipped:"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; read the server's URL before any test empties the environment."""
    config.addinivalue_line(
        "markers", "every_store: run the module's tests against SQLite and PostgreSQL")
    config.stash[_POSTGRES_URL] = os.environ.get("SECURECHAT_TEST_POSTGRES_URL",
                                                 POSTGRES_ADMIN_URL)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of a module marked ``every_store`` run once per database."""
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
            "every_store"):
        metafunc.parametrize("database", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SECURECHAT_* variable or stray .env of the developer leaks into a test."""
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


# --- the database: SQLite, or a PostgreSQL schema of the test's own ---------------------


def _admin(url: str) -> tuple[Any, str]:
    """A connection to the PostgreSQL server (None), and why there is none ("")."""
    try:
        import psycopg
    except ImportError:
        return None, f"{_NO_POSTGRES} psycopg is not installed (pip install -e '.[postgres]')"
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3), ""
    except psycopg.OperationalError as e:
        # libpq's first sentence (e.g. "... port 5432 failed: Connection refused").
        why = str(e).strip().splitlines()[0].rpartition(": ")[2].strip()
        return None, f"{_NO_POSTGRES} cannot connect to {shown(url)} ({why}); start it, or set " \
                     "SECURECHAT_TEST_POSTGRES_URL"


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return ((callspec is not None and callspec.params.get("database") == "postgres")
            or "postgres_url" in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server, its tests are skipped (one line a file), saying why.

    Under ``CI`` they are left to fail in ``postgres_server``: .ci/run starts the server.
    """
    wanted = [item for item in items if _needs_postgres(item)]
    if not wanted or os.environ.get("CI"):
        return
    admin, reason = _admin(config.stash[_POSTGRES_URL])
    if admin is not None:
        admin.close()
        return
    for item in wanted:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """One summary line for all the tests skipped for want of PostgreSQL, not one a test."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and \
            _NO_POSTGRES in str(report.longrepr[2]):
        report.longrepr = (__file__, None, report.longrepr[2])
    return report


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[str]:
    """A database of this test run's own on the PostgreSQL server; its URL. Dropped at the end."""
    admin_url = pytestconfig.stash[_POSTGRES_URL]
    admin, reason = _admin(admin_url)
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must test PostgreSQL (.ci/run starts it)", pytrace=False)
        pytest.skip(reason)
    name = f"securechat_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema of their own (dropped afterwards)."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield _with_search_path(postgres_server, schema)
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections find their tables in ``schema`` (libpq's ``options``)."""
    joiner = "&" if urlsplit(url).query else "?"
    return f"{url}{joiner}options={quote(f'-c search_path={schema}')}"


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str | None:
    """The DATABASE setting: None (SQLite in the instance folder), or a PostgreSQL URL."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(database: str | None) -> dict[str, Any]:
    """Overrides for the app under test; tests may add to it before `app` is built."""
    return dict(FAST) if database is None else {**FAST, "DATABASE": database}


@pytest.fixture
def app(settings: dict[str, Any], instance: Path) -> Iterator[Flask]:
    """A securechat app on a temporary instance folder; its connections closed afterwards."""
    app = create_app(settings, instance_path=instance)
    yield app
    app.extensions["securechat.db"].close()


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


# --- Redis: a key prefix of the test's own ---------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The test Redis (module scope: read before each test's environment is emptied)."""
    return reachable_redis_url()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    name = new_prefix()
    yield name
    drop_prefix(redis_url, name)
