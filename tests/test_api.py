"""Every row of the HTTP API contract and its JSON errors (in-process; body limits over HTTP)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from securechat import ApiError, ChatClient, recovery

from .helpers import COOKIE, PASSWORD, AuthActions, assert_error, unique_name

# The contract holds on either database.
pytestmark = pytest.mark.every_store


def is_iso_utc(text: str) -> bool:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def messages_path(conv_id: str) -> str:
    return f"/api/conversations/{conv_id}/messages"


# --- health, register, login, session, logout ------------------------------------


def test_health(http: FlaskClient) -> None:
    response = http.get("/api/health")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_register_created(auth: AuthActions) -> None:
    response = auth.register("Carol.x-1")
    body = response.get_json()
    assert response.status_code == 201 and set(body) == {"username", "recovery_code"}
    assert body["username"] == "Carol.x-1"
    recovery.parse_code(body["recovery_code"])  # a well-formed code, shown once


def test_register_taken_ignoring_case(auth: AuthActions) -> None:
    assert auth.register("dave").status_code == 201
    for name in ("dave", "DAVE", "Dave"):
        assert_error(auth.register(name), 409)


@pytest.mark.parametrize("username", ["ab", "a" * 33, "has space", "ünï", "semi;colon", "", "a/b"])
def test_register_invalid_username(auth: AuthActions, username: str) -> None:
    assert_error(auth.register(username), 400, "invalid_username")


@pytest.mark.parametrize("username", ["abc", "a" * 32, "A.b_c-9"])
def test_register_username_bounds_accepted(auth: AuthActions, username: str) -> None:
    assert auth.register(username).status_code == 201


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025])
def test_register_invalid_password(auth: AuthActions, password: str) -> None:
    assert_error(auth.register(unique_name(), password), 400, "invalid_password")


@pytest.mark.parametrize("password", ["12345678", "p" * 1024])
def test_register_password_bounds_accepted(auth: AuthActions, password: str) -> None:
    auth.signup(unique_name(), password)


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
@pytest.mark.parametrize(
    "body",
    [
        {"username": 1, "password": PASSWORD},
        {"username": "abc", "password": None},
        {"username": ["abc"], "password": PASSWORD},
        {"password": PASSWORD},
        {},
    ],
)
def test_wrong_field_types(http: FlaskClient, path: str, body: dict[str, Any]) -> None:
    assert_error(http.post(path, json=body), 400, "invalid_field")


def test_login_returns_username_csrf_and_cookie(http: FlaskClient, auth: AuthActions) -> None:
    auth.register("erin")
    response = http.post("/api/login", json={"username": "ERIN", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "erin" and len(body["csrf_token"]) >= 32
    assert response.headers["Set-Cookie"].startswith(COOKIE + "=")


def test_login_failures_are_indistinguishable(http: FlaskClient, auth: AuthActions) -> None:
    auth.register("frank")
    wrong = http.post("/api/login", json={"username": "frank", "password": "wrong password"})
    unknown = http.post("/api/login", json={"username": "nobody", "password": PASSWORD})
    malformed = http.post("/api/login", json={"username": "x y", "password": PASSWORD})
    for response in (wrong, unknown, malformed):
        assert_error(response, 401, "invalid_credentials")
    assert wrong.data == unknown.data == malformed.data
    assert "Set-Cookie" not in wrong.headers


def test_session_and_logout(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup("alice")
    assert http.get("/api/session").get_json() == {"username": "alice", "csrf_token": auth.token}
    response = http.post("/api/logout", json={}, headers=auth.csrf)
    assert response.status_code == 204 and response.data == b""
    assert_error(http.get("/api/session"), 401, "unauthorized")


def test_session_without_cookie_is_401(http: FlaskClient) -> None:
    assert_error(http.get("/api/session"), 401)


def test_logout_without_session_is_harmless(http: FlaskClient) -> None:
    assert http.post("/api/logout", json={}).status_code == 204


# --- conversations --------------------------------------------------------------


def test_create_conversation_default_and_given_title(http: FlaskClient,
                                                     auth: AuthActions) -> None:
    auth.signup()
    response = http.post("/api/conversations", json={}, headers=auth.csrf)
    assert response.status_code == 201
    conv = response.get_json()
    assert set(conv) == {"id", "title", "created_at", "updated_at", "starred"}
    assert conv["title"] == "New conversation" and isinstance(conv["id"], str)
    assert is_iso_utc(conv["created_at"]) and conv["updated_at"] == conv["created_at"]
    assert conv["starred"] is False
    assert auth.new_conversation("Trip <plans>")["title"] == "Trip <plans>"
    assert auth.new_conversation("   ")["title"] == "New conversation"


@pytest.mark.parametrize("title", [5, ["x"], {"a": 1}, True, "t" * 201])
def test_create_conversation_bad_title(http: FlaskClient, auth: AuthActions,
                                       title: object) -> None:
    auth.signup()
    assert_error(http.post("/api/conversations", json={"title": title}, headers=auth.csrf), 400)


def test_list_conversations_newest_first(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    ids = [auth.new_conversation(f"c{i}")["id"] for i in range(4)]
    body = http.get("/api/conversations").get_json()
    assert set(body) == {"conversations", "next_before"} and body["next_before"] is None
    listed = body["conversations"]
    assert [c["id"] for c in listed] == ids[::-1]
    assert [c["title"] for c in listed] == ["c3", "c2", "c1", "c0"]


def test_list_is_ordered_by_last_activity(auth: AuthActions) -> None:
    auth.signup()
    old, new = auth.new_conversation("old")["id"], auth.new_conversation("new")["id"]
    assert auth.send(old, "bump").status_code == 201  # a message makes it the most recent
    listed = auth.conversations()
    assert [c["id"] for c in listed] == [old, new]
    assert listed[0]["updated_at"] > listed[0]["created_at"]


def test_list_pages_with_an_opaque_cursor(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    ids = [auth.new_conversation(f"p{i}")["id"] for i in range(7)][::-1]
    seen, before, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({} if before is None else {"before": before})
        body = http.get("/api/conversations", query_string=params).get_json()
        seen += [c["id"] for c in body["conversations"]]
        before, pages = body["next_before"], pages + 1
        if before is None:
            break
        assert isinstance(before, str)
    assert seen == ids and pages == 3


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"limit": "x"},
                                   {"before": "not-a-cursor"}, {"before": "WzEsMl0"}])
def test_list_refuses_bad_paging(http: FlaskClient, auth: AuthActions,
                                 query: dict[str, Any]) -> None:
    auth.signup()
    assert_error(http.get("/api/conversations", query_string=query), 400, "invalid_query")


def test_send_message_and_reply(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    text = "Hello <b>world</b> & “quotes” 🙂"
    response = auth.send(conv["id"], text)
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"message", "reply"}
    for msg in body.values():
        assert set(msg) == {"id", "role", "content", "created_at"} and is_iso_utc(msg["created_at"])
    assert body["message"]["role"] == "user" and body["message"]["content"] == text
    assert body["reply"]["role"] == "assistant" and text in body["reply"]["content"]
    assert body["message"]["id"] != body["reply"]["id"]


@pytest.mark.parametrize(
    "content,code",
    [("", "invalid_content"), ("   ", "invalid_content"), ("\n\t", "invalid_content"),
     ("x" * 32769, "invalid_content"), (None, "invalid_field"), (5, "invalid_field"),
     (["x"], "invalid_field"), ({"x": 1}, "invalid_field")],
)
def test_send_invalid_content(auth: AuthActions, content: object, code: str) -> None:
    auth.signup()
    conv = auth.new_conversation()
    assert_error(auth.send(conv["id"], content), 400, code)
    assert auth.history(conv["id"]) == []  # nothing stored


def test_send_longest_message_accepted(auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    text = "y" * 32768
    response = auth.send(conv["id"], text)
    assert response.status_code == 201 and response.get_json()["message"]["content"] == text


def test_send_to_unknown_conversation(auth: AuthActions) -> None:
    auth.signup()
    assert_error(auth.send("nope", "hi"), 404, "not_found")


def test_history_pages(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    for i in range(6):
        assert auth.send(conv, f"m{i}").status_code == 201  # 12 messages: m0, echo, m1, ...

    def page(**params: Any) -> dict[str, Any]:
        return http.get(messages_path(conv), query_string={"limit": 5, **params}).get_json()

    first = page()
    assert set(first) == {"messages", "next_before"}
    assert [m["content"] for m in first["messages"]] == [
        "Echo: m3",
        "m4",
        "Echo: m4",
        "m5",
        "Echo: m5",
    ]
    second = page(before=first["next_before"])
    assert [m["content"] for m in second["messages"]] == ["m1", "Echo: m1", "m2", "Echo: m2", "m3"]
    third = page(before=second["next_before"])
    assert [m["content"] for m in third["messages"]] == ["m0", "Echo: m0"]
    assert third["next_before"] is None
    # (ChatClient.history walking these pages: test_client.py.)
    everything = [m["content"] for p in (third, second, first) for m in p["messages"]]
    assert everything == [x for i in range(6) for x in (f"m{i}", f"Echo: m{i}")]


def test_history_default_limit_and_empty(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    empty = http.get(messages_path(conv), query_string={"limit": 50}).get_json()
    assert empty == {"messages": [], "next_before": None}
    for i in range(26):
        assert auth.send(conv, f"n{i}").status_code == 201
    page = http.get(messages_path(conv)).get_json()
    assert len(page["messages"]) == 50 and page["next_before"] is not None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"before": "-1"},
        {"before": "abc"},
        {"limit": "1.5"},
    ],
)
def test_history_bad_query(http: FlaskClient, auth: AuthActions, params: dict[str, Any]) -> None:
    auth.signup()
    conv = auth.new_conversation()
    assert_error(http.get(messages_path(conv["id"]), query_string=params), 400)


def test_history_limit_max_accepted(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    response = http.get(messages_path(conv["id"]), query_string={"limit": 200})
    assert response.status_code == 200 and response.get_json()["messages"] == []


def test_delete_conversation(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    conv = auth.new_conversation()
    assert auth.send(conv["id"], "bye").status_code == 201
    response = http.delete(f"/api/conversations/{conv['id']}", headers=auth.csrf)
    assert response.status_code == 204
    assert all(c["id"] != conv["id"] for c in auth.conversations())
    assert_error(http.get(messages_path(conv["id"])), 404)
    assert_error(http.delete(f"/api/conversations/{conv['id']}", headers=auth.csrf), 404)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/conversations"),
        ("POST", "/api/conversations"),
        ("GET", "/api/conversations/x/messages"),
        ("POST", "/api/conversations/x/messages"),
        ("POST", "/api/conversations/x/reply"),
        ("DELETE", "/api/conversations/x"),
    ],
)
def test_conversation_routes_need_a_session(http: FlaskClient, method: str, path: str) -> None:
    assert_error(http.open(path, method=method, json={"content": "hi"}), 401, "unauthorized")


# --- the error contract ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/api/conversations/x/y/z", "/api/"])
def test_unknown_api_path_is_json_404(http: FlaskClient, path: str) -> None:
    assert_error(http.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/login"),
        ("PUT", "/api/conversations"),
        ("DELETE", "/api/health"),
        ("PATCH", "/api/register"),
    ],
)
def test_wrong_method_is_json_405(http: FlaskClient, method: str, path: str) -> None:
    response = http.open(path, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
@pytest.mark.parametrize(
    "headers,data",
    [
        ({"Content-Type": "text/plain"}, b'{"username": "a", "password": "b"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"username=a&password=b"),
        ({}, b""),
    ],
)
def test_wrong_content_type_is_415(
    http: FlaskClient, path: str, headers: dict[str, str], data: bytes
) -> None:
    assert_error(http.post(path, headers=headers, data=data), 415, "unsupported_media_type")


@pytest.mark.parametrize("data", [b"{", b"{'a': 1}", b"nul", b"\xff\xfe", b'{"username": "a",}'])
def test_malformed_json_is_400(http: FlaskClient, data: bytes) -> None:
    response = http.post("/api/register", data=data, content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("data", [b"[]", b'"text"', b"1", b"null", b"true", b'[{"username": "a"}]'])
def test_non_object_json_is_400(http: FlaskClient, data: bytes) -> None:
    response = http.post("/api/login", data=data, content_type="application/json")
    assert_error(response, 400, "invalid_json")


def test_send_needs_json_object(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    path = messages_path(auth.new_conversation()["id"])
    assert_error(http.post(path, data="hi", headers={**auth.csrf, "Content-Type": "text/plain"}),
                 415)
    assert_error(http.post(path, json=["hi"], headers=auth.csrf), 400)


@pytest.fixture
def small_bodies(settings: dict[str, Any]) -> None:
    settings["MAX_CONTENT_LENGTH"] = 100


def test_body_limit_is_configurable(small_bodies: None, http: FlaskClient) -> None:
    assert_error(http.post("/api/register", json={"username": "abc", "password": "p" * 200}),
                 413)


def test_unexpected_exception_is_json_500_without_details(app: Flask, http: FlaskClient) -> None:
    def boom() -> None:
        raise RuntimeError("secret detail /etc/passwd " + app.config["SECRET_KEY"])

    app.add_url_rule("/api/boom", "boom", boom)
    app.add_url_rule("/boom", "boom-page", boom)
    response = http.get("/api/boom")
    assert_error(response, 500, "internal_error")
    page = http.get("/boom")
    for r in (response, page):
        assert r.status_code == 500
        assert "secret detail" not in r.text and app.config["SECRET_KEY"] not in r.text
        assert "RuntimeError" not in r.text and "passwd" not in r.text


def test_static_files_only_under_assets(http: FlaskClient) -> None:
    for path, status in [("/assets/app.js", 200), ("/static/app.js", 404)]:
        response = http.get(path)
        response.close()  # a file response holds its file open until closed
        assert response.status_code == status


@pytest.mark.parametrize("path", ["/api/logout", "/api/conversations/{id}/reply"])
def test_bodyless_routes_refuse_non_json_bodies(http: FlaskClient, auth: AuthActions,
                                                path: str) -> None:
    auth.signup("alice")
    url = path.format(id=auth.new_conversation()["id"])
    response = http.post(url, data=b"garbage",
                         headers={**auth.csrf, "Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    assert http.get("/api/session").get_json()["username"] == "alice"  # the session was kept


def test_logout_accepts_an_empty_body(http: FlaskClient, auth: AuthActions) -> None:
    auth.signup()
    assert http.post("/api/logout", headers=auth.csrf).status_code == 204
    assert_error(http.get("/api/session"), 401)


# --- bodies nested too deeply to parse -------------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000  # well under 1 MiB; json.loads would recurse


@pytest.mark.parametrize("route", ["register", "login", "logout", "create", "send", "reply"])
def test_deeply_nested_json_is_a_400_on_every_body_route(
        http: FlaskClient, auth: AuthActions, route: str,
        caplog: pytest.LogCaptureFixture) -> None:
    auth.signup()
    conv = auth.new_conversation()["id"]
    path = {"register": "/api/register", "login": "/api/login", "logout": "/api/logout",
            "create": "/api/conversations", "send": messages_path(conv),
            "reply": f"/api/conversations/{conv}/reply"}[route]
    response = http.post(path, data=NESTED,
                         headers={"Content-Type": "application/json", **auth.csrf})
    assert_error(response, 400, "invalid_json")
    # A client mistake: no traceback, no error line in the server's log.
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= 40]


# --- body limits over real HTTP: a socket the server must stop reading ----------------


def raw(client: ChatClient, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A real HTTP request through a ChatClient's cookie jar, without its JSON/CSRF help."""
    return client.http.request(method, client.base_url + path, timeout=30, **kwargs)



@pytest.mark.parametrize("size", [1024 * 1024 + 1, 3 * 1024 * 1024])
def test_oversized_body_is_413(client: ChatClient, size: int) -> None:
    body = b'{"username": "abc", "password": "' + b"x" * size + b'"}'
    response = raw(
        client, "POST", "/api/register", data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "too_large")


def test_oversized_message_body_is_413_for_a_session(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    response = raw(alice, "POST", messages_path(conv["id"]),
                   json={"content": "z" * (1024 * 1024 + 10)},
                   headers={"X-CSRF-Token": alice.csrf_token or ""})
    assert_error(response, 413, "too_large")
    assert alice.history(conv["id"]) == []


def _chunked(*parts: bytes):  # type: ignore[no-untyped-def]
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    yield from parts


def test_oversized_chunked_body_is_413(client: ChatClient) -> None:
    head = b'{"username": "chunky", "password": "password123"'
    body = _chunked(head, *([b" " * 65536] * 20), b"}")  # 1.25 MiB, no Content-Length
    response = raw(
        client, "POST", "/api/register", data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "too_large")
    with pytest.raises(ApiError):
        client.login("chunky", "password123")  # and nothing was created


def test_small_chunked_body_is_accepted(client: ChatClient) -> None:
    body = _chunked(b'{"username": "chunk2", ', b'"password": "password123"}')
    response = raw(
        client, "POST", "/api/register", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201
