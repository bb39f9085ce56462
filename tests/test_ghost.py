"""Ghost chats: answered like any chat, stored nowhere, logged nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import protocol, store
from securechat.backends import BackendError, BackendUnavailable, Turn

from .helpers import PASSWORD, AuthActions, assert_error, open_database
from .served import Served, serve_env

pytestmark = pytest.mark.every_store

MARKER = "zebra-umbrella-7731 my private question"
TABLES = ("users", "sessions", "conversations", "messages", "events")


def counts(app: Flask) -> dict[str, int]:
    """Rows per table."""
    with open_database(app) as db:
        return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608
                for t in TABLES}


def ghost(auth: AuthActions, body: Any, stream: bool = False) -> Any:
    headers = {**auth.csrf, **({"Accept": protocol.CONTENT_TYPE} if stream else {})}
    return auth.http.post("/api/ghost", json=body, headers=headers)


def turns(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def test_a_ghost_reply_is_answered_and_stores_nothing(app: Flask, auth: AuthActions,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    auth.signup()
    before = counts(app)
    caplog.set_level(logging.DEBUG)
    response = ghost(auth, turns(("user", "earlier"), ("assistant", "Echo: earlier"),
                                 ("user", MARKER)))
    assert response.status_code == 200
    assert response.get_json() == {"reply": {"role": "assistant", "content": f"Echo: {MARKER}"}}
    assert counts(app) == before
    assert MARKER.split()[0] not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("securechat")]
    # Nothing in the security log either (reads and ghosts are not events).
    assert [e["type"] for e in auth.http.get("/api/account/events").get_json()["events"]] == \
        ["login"]


def test_a_ghost_reply_streams(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    before = counts(app)
    response = ghost(auth, turns(("user", MARKER)), stream=True)
    assert response.status_code == 200
    events = [(e.event, json.loads(e.data)) for e in protocol.parse([response.data])]
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"}
    assert "".join(d["content"] for n, d in events if n == "delta") == f"Echo: {MARKER}"
    assert events[-1][1] == {"role": "assistant", "content": f"Echo: {MARKER}"}
    assert counts(app) == before


class _Failing:
    def __init__(self, error: BackendError) -> None:
        self.error = error

    def reply(self, history: Sequence[Turn]) -> str:
        raise self.error

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        yield "half "
        raise self.error


def test_backend_failures_store_nothing(app: Flask, auth: AuthActions) -> None:
    auth.signup()
    before = counts(app)
    app.extensions["securechat.responder"] = _Failing(BackendUnavailable("down"))
    assert_error(ghost(auth, turns(("user", MARKER))), 503, "backend_unavailable")
    events = [e.event for e in protocol.parse([ghost(auth, turns(("user", "x")), True).data])]
    assert events == ["delta", "error"]
    cut = BackendError("cut")
    cut.partial = "half of it"
    app.extensions["securechat.responder"] = _Failing(cut)
    answer = ghost(auth, turns(("user", MARKER)))
    assert answer.status_code == 200
    assert answer.get_json()["reply"] == {"role": "assistant", "content": "half of it",
                                          "incomplete": True}
    assert counts(app) == before


@pytest.mark.parametrize("body", [
    {},
    {"messages": []},
    {"messages": "hi"},
    {"messages": [{"role": "user"}]},
    {"messages": [{"role": "system", "content": "obey"}]},
    {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
    {"messages": [{"role": "user", "content": "   "}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": "x" * 32_769}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    {"messages": [{"role": "user", "content": "hi"}] * 21},
    {"messages": [{"role": "user", "content": "hi"}], "conversation": "x"},
    {"messages": ["hi"]},
])
def test_bad_histories_are_400(auth: AuthActions, body: Any) -> None:
    auth.signup()
    assert_error(ghost(auth, body), 400, "invalid_field")


def test_ghosts_need_a_session_and_the_csrf_header(auth: AuthActions) -> None:
    assert_error(auth.http.post("/api/ghost", json=turns(("user", "hi"))), 401)
    auth.signup()
    assert_error(auth.http.post("/api/ghost", json=turns(("user", "hi"))), 403)


def test_ghosts_share_the_backend_budget(settings: dict[str, Any], instance: Path) -> None:
    from securechat import create_app

    app = create_app({**settings, "RATELIMIT_ENABLED": True, "CHAT_RATE_LIMIT": "2 per minute"},
                     instance_path=instance)
    auth = AuthActions(app.test_client())
    auth.signup()
    conv = auth.new_conversation()["id"]
    assert auth.send(conv, "one").status_code == 201
    assert ghost(auth, turns(("user", "two"))).status_code == 200
    assert_error(ghost(auth, turns(("user", "three"))), 429)
    assert_error(auth.send(conv, "four"), 429)
    app.extensions["securechat.db"].close()


@pytest.fixture
def served(tmp_path: Path, database: str | None) -> Iterator[Served]:
    extra = {"SECURECHAT_DATABASE": database} if database else {}
    server = Served(tmp_path / "instance", serve_env(**extra))
    try:
        yield server
    finally:
        server.kill()


def test_under_serve_no_row_and_no_log_line_holds_it(served: Served, tmp_path: Path,
                                                     database: str | None) -> None:
    http = requests.Session()
    body = {"username": "ghostly", "password": PASSWORD}
    assert http.post(served.url + "/api/register", json=body, timeout=30).status_code == 201
    token = http.post(served.url + "/api/login", json=body, timeout=30).json()["csrf_token"]
    headers = {protocol.CSRF_HEADER: token}
    for accept in ("application/json", protocol.CONTENT_TYPE):
        answer = http.post(served.url + "/api/ghost", json=turns(("user", MARKER)),
                           headers={**headers, "Accept": accept}, timeout=30)
        assert answer.status_code == 200 and MARKER in answer.text
    status, out, err = served.stop()
    assert status == 0
    logged = out + err
    assert MARKER.split()[0] not in logged and str(len(MARKER)) not in logged
    with closing(store.connect(database or str(tmp_path / "instance" / "securechat.sqlite3"))) \
            as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0
        assert [r[0] for r in db.execute("SELECT type FROM events")] == ["login"]
    if database is None:  # and in no file of the instance, WAL included
        every = b"".join(p.read_bytes() for p in (tmp_path / "instance").iterdir()
                         if p.is_file())
        assert MARKER.split()[0].encode() not in every
