"""Every row of the HTTP API contract, over real HTTP, and its JSON errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import ApiError, BackgroundServer, ChatClient, create_app

from .conftest import PASSWORD, unique_name


def raw(client: ChatClient, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request through the client's cookie jar, without its JSON/CSRF conveniences."""
    return client.http.request(method, client.base_url + path, timeout=30, **kwargs)


def csrf(client: ChatClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.csrf_token or ""}


def post_message(client: ChatClient, conv_id: str, body: Any) -> requests.Response:
    """POST a message body as JSON with the client's session and CSRF token."""
    return raw(client, "POST", f"/api/conversations/{conv_id}/messages", json=body,
               headers=csrf(client))


def assert_error(response: requests.Response, status: int, code: str | None = None) -> None:
    """The contract's error shape: JSON {"error": {"code", "message"}} and nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text and "<html" not in response.text.lower()


def is_iso_utc(text: str) -> bool:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


# --- health, register, login, session, logout ------------------------------------


def test_health(client: ChatClient) -> None:
    response = raw(client, "GET", "/api/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_register_created(client: ChatClient) -> None:
    response = raw(
        client, "POST", "/api/register", json={"username": "Carol.x-1", "password": PASSWORD}
    )
    assert response.status_code == 201 and response.json() == {"username": "Carol.x-1"}


def test_register_taken_ignoring_case(client: ChatClient) -> None:
    client.register("dave", PASSWORD)
    for name in ("dave", "DAVE", "Dave"):
        assert_error(
            raw(client, "POST", "/api/register", json={"username": name, "password": PASSWORD}), 409
        )


@pytest.mark.parametrize("username", ["ab", "a" * 33, "has space", "ünï", "semi;colon", "", "a/b"])
def test_register_invalid_username(client: ChatClient, username: str) -> None:
    response = raw(
        client, "POST", "/api/register", json={"username": username, "password": PASSWORD}
    )
    assert_error(response, 400, "invalid_username")


@pytest.mark.parametrize("username", ["abc", "a" * 32, "A.b_c-9"])
def test_register_username_bounds_accepted(client: ChatClient, username: str) -> None:
    client.register(username, PASSWORD)


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025])
def test_register_invalid_password(client: ChatClient, password: str) -> None:
    response = raw(
        client, "POST", "/api/register", json={"username": unique_name(), "password": password}
    )
    assert_error(response, 400, "invalid_password")


@pytest.mark.parametrize("password", ["12345678", "p" * 1024])
def test_register_password_bounds_accepted(client: ChatClient, password: str) -> None:
    name = unique_name()
    client.register(name, password)
    client.login(name, password)


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
def test_wrong_field_types(client: ChatClient, path: str, body: dict[str, Any]) -> None:
    assert_error(raw(client, "POST", path, json=body), 400, "invalid_field")


def test_login_returns_username_csrf_and_cookie(client: ChatClient) -> None:
    client.register("erin", PASSWORD)
    response = raw(client, "POST", "/api/login", json={"username": "ERIN", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "erin" and len(body["csrf_token"]) >= 32
    assert "securechat_session" in response.cookies


def test_login_failures_are_indistinguishable(client: ChatClient) -> None:
    client.register("frank", PASSWORD)
    wrong = raw(
        client, "POST", "/api/login", json={"username": "frank", "password": "wrong password"}
    )
    unknown = raw(client, "POST", "/api/login", json={"username": "nobody", "password": PASSWORD})
    malformed = raw(client, "POST", "/api/login", json={"username": "x y", "password": PASSWORD})
    for response in (wrong, unknown, malformed):
        assert_error(response, 401, "invalid_credentials")
    assert wrong.content == unknown.content == malformed.content
    assert "Set-Cookie" not in wrong.headers


def test_session_and_logout(alice: ChatClient) -> None:
    body = raw(alice, "GET", "/api/session").json()
    assert body == {"username": "alice", "csrf_token": alice.csrf_token}
    response = raw(alice, "POST", "/api/logout", json={}, headers=csrf(alice))
    assert response.status_code == 204 and response.content == b""
    assert_error(raw(alice, "GET", "/api/session"), 401, "unauthorized")


def test_session_without_cookie_is_401(client: ChatClient) -> None:
    assert_error(raw(client, "GET", "/api/session"), 401)


def test_logout_without_session_is_harmless(client: ChatClient) -> None:
    assert raw(client, "POST", "/api/logout", json={}).status_code == 204


# --- conversations --------------------------------------------------------------


def test_create_conversation_default_and_given_title(alice: ChatClient) -> None:
    response = raw(alice, "POST", "/api/conversations", json={}, headers=csrf(alice))
    assert response.status_code == 201
    conv = response.json()
    assert set(conv) == {"id", "title", "created_at", "updated_at", "starred"}
    assert conv["title"] == "New conversation" and isinstance(conv["id"], str)
    assert is_iso_utc(conv["created_at"]) and conv["updated_at"] == conv["created_at"]
    assert conv["starred"] is False
    assert alice.new_conversation("Trip <plans>")["title"] == "Trip <plans>"
    assert alice.new_conversation("   ")["title"] == "New conversation"


@pytest.mark.parametrize("title", [5, ["x"], {"a": 1}, True, "t" * 201])
def test_create_conversation_bad_title(alice: ChatClient, title: object) -> None:
    assert_error(
        raw(alice, "POST", "/api/conversations", json={"title": title}, headers=csrf(alice)), 400
    )


def test_list_conversations_newest_first(alice: ChatClient) -> None:
    ids = [alice.new_conversation(f"c{i}")["id"] for i in range(4)]
    body = raw(alice, "GET", "/api/conversations").json()
    assert set(body) == {"conversations", "next_before"} and body["next_before"] is None
    listed = body["conversations"]
    assert [c["id"] for c in listed] == ids[::-1]
    assert [c["title"] for c in listed] == ["c3", "c2", "c1", "c0"]


def test_list_is_ordered_by_last_activity(alice: ChatClient) -> None:
    old, new = alice.new_conversation("old")["id"], alice.new_conversation("new")["id"]
    alice.send(old, "bump")  # a message makes a conversation the most recent
    listed = alice.conversations()
    assert [c["id"] for c in listed] == [old, new]
    assert listed[0]["updated_at"] > listed[0]["created_at"]


def test_list_pages_with_an_opaque_cursor(alice: ChatClient) -> None:
    ids = [alice.new_conversation(f"p{i}")["id"] for i in range(7)][::-1]
    seen, before, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({} if before is None else {"before": before})
        body = raw(alice, "GET", "/api/conversations", params=params).json()
        seen += [c["id"] for c in body["conversations"]]
        before, pages = body["next_before"], pages + 1
        if before is None:
            break
        assert isinstance(before, str)
    assert seen == ids and pages == 3
    assert [c["id"] for c in alice.conversations(page_size=2)] == ids


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"limit": "x"},
                                   {"before": "not-a-cursor"}, {"before": "WzEsMl0"}])
def test_list_refuses_bad_paging(alice: ChatClient, query: dict[str, Any]) -> None:
    assert_error(raw(alice, "GET", "/api/conversations", params=query), 400, "invalid_query")


def test_send_message_and_reply(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    text = "Hello <b>world</b> & “quotes” 🙂"
    response = post_message(alice, conv["id"], {"content": text})
    assert response.status_code == 201
    body = response.json()
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
def test_send_invalid_content(alice: ChatClient, content: object, code: str) -> None:
    conv = alice.new_conversation()
    assert_error(post_message(alice, conv["id"], {"content": content}), 400, code)
    assert alice.history(conv["id"]) == []  # nothing stored


def test_send_longest_message_accepted(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    text = "y" * 32768
    assert alice.send(conv["id"], text)["message"]["content"] == text


def test_send_to_unknown_conversation(alice: ChatClient) -> None:
    assert_error(post_message(alice, "nope", {"content": "hi"}), 404, "not_found")


def test_history_pages(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    for i in range(6):
        alice.send(conv["id"], f"m{i}")  # 12 messages: m0, echo, m1, echo, ...
    first = raw(
        alice, "GET", f"/api/conversations/{conv['id']}/messages", params={"limit": 5}
    ).json()
    assert set(first) == {"messages", "next_before"}
    assert [m["content"] for m in first["messages"]] == [
        "Echo: m3",
        "m4",
        "Echo: m4",
        "m5",
        "Echo: m5",
    ]
    second = alice.history_page(conv["id"], limit=5, before=first["next_before"])
    assert [m["content"] for m in second["messages"]] == ["m1", "Echo: m1", "m2", "Echo: m2", "m3"]
    third = alice.history_page(conv["id"], limit=5, before=second["next_before"])
    assert [m["content"] for m in third["messages"]] == ["m0", "Echo: m0"]
    assert third["next_before"] is None
    everything = alice.history(conv["id"], page_size=5)
    assert [m["content"] for m in everything] == [
        x for i in range(6) for x in (f"m{i}", f"Echo: m{i}")
    ]


def test_history_default_limit_and_empty(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    assert alice.history_page(conv["id"]) == {"messages": [], "next_before": None}
    for i in range(26):
        alice.send(conv["id"], f"n{i}")
    page = raw(alice, "GET", f"/api/conversations/{conv['id']}/messages").json()
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
def test_history_bad_query(alice: ChatClient, params: dict[str, Any]) -> None:
    conv = alice.new_conversation()
    assert_error(raw(alice, "GET", f"/api/conversations/{conv['id']}/messages", params=params), 400)


def test_history_limit_max_accepted(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    assert alice.history_page(conv["id"], limit=200)["messages"] == []


def test_delete_conversation(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    alice.send(conv["id"], "bye")
    response = raw(alice, "DELETE", f"/api/conversations/{conv['id']}", headers=csrf(alice))
    assert response.status_code == 204
    assert all(c["id"] != conv["id"] for c in alice.conversations())
    assert_error(raw(alice, "GET", f"/api/conversations/{conv['id']}/messages"), 404)
    assert_error(raw(alice, "DELETE", f"/api/conversations/{conv['id']}", headers=csrf(alice)), 404)


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
def test_conversation_routes_need_a_session(client: ChatClient, method: str, path: str) -> None:
    assert_error(raw(client, method, path, json={"content": "hi"}), 401, "unauthorized")


# --- the error contract ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/api/conversations/x/y/z", "/api/"])
def test_unknown_api_path_is_json_404(client: ChatClient, path: str) -> None:
    assert_error(raw(client, "GET", path), 404, "not_found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/login"),
        ("PUT", "/api/conversations"),
        ("DELETE", "/api/health"),
        ("PATCH", "/api/register"),
    ],
)
def test_wrong_method_is_json_405(client: ChatClient, method: str, path: str) -> None:
    response = raw(client, method, path)
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
    client: ChatClient, path: str, headers: dict[str, str], data: bytes
) -> None:
    assert_error(
        raw(client, "POST", path, headers=headers, data=data), 415, "unsupported_media_type"
    )


@pytest.mark.parametrize("data", [b"{", b"{'a': 1}", b"nul", b"\xff\xfe", b'{"username": "a",}'])
def test_malformed_json_is_400(client: ChatClient, data: bytes) -> None:
    response = raw(
        client, "POST", "/api/register", data=data, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("data", [b"[]", b'"text"', b"1", b"null", b"true", b'[{"username": "a"}]'])
def test_non_object_json_is_400(client: ChatClient, data: bytes) -> None:
    response = raw(
        client, "POST", "/api/login", data=data, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_send_needs_json_object(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    path = f"/api/conversations/{conv['id']}/messages"
    assert_error(
        raw(alice, "POST", path, data="hi", headers={**csrf(alice), "Content-Type": "text/plain"}),
        415,
    )
    assert_error(raw(alice, "POST", path, json=["hi"], headers=csrf(alice)), 400)


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 3 * 1024 * 1024])
def test_oversized_body_is_413(client: ChatClient, size: int) -> None:
    body = b'{"username": "abc", "password": "' + b"x" * size + b'"}'
    response = raw(
        client, "POST", "/api/register", data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "too_large")


def test_oversized_message_body_is_413_for_a_session(alice: ChatClient) -> None:
    conv = alice.new_conversation()
    response = post_message(alice, conv["id"], {"content": "z" * (1024 * 1024 + 10)})
    assert_error(response, 413, "too_large")
    assert alice.history(conv["id"]) == []


def test_body_limit_is_configurable(settings: dict[str, Any], tmp_path: Path) -> None:
    small = create_app({**settings, "MAX_CONTENT_LENGTH": 100}, instance_path=tmp_path / "small")
    with BackgroundServer(small) as srv:
        r = requests.post(
            srv.url + "/api/register", json={"username": "abc", "password": "p" * 200}, timeout=30
        )
        assert_error(r, 413)


def test_unexpected_exception_is_json_500_without_details(app: Flask) -> None:
    def boom() -> None:
        raise RuntimeError("secret detail /etc/passwd " + app.config["SECRET_KEY"])

    app.add_url_rule("/api/boom", "boom", boom)
    app.add_url_rule("/boom", "boom-page", boom)
    with BackgroundServer(app) as srv:
        response = requests.get(srv.url + "/api/boom", timeout=30)
        assert_error(response, 500, "internal_error")
        page = requests.get(srv.url + "/boom", timeout=30)
    for r in (response, page):
        assert r.status_code == 500
        assert "secret detail" not in r.text and app.config["SECRET_KEY"] not in r.text
        assert "RuntimeError" not in r.text and "passwd" not in r.text


def test_client_raises_package_error_with_code(alice: ChatClient) -> None:
    with pytest.raises(ApiError) as info:
        alice.send("missing", "hi")
    assert info.value.status == 404 and info.value.code == "not_found"
    assert "No such conversation" in info.value.message


def test_static_files_only_under_assets(app: Flask) -> None:
    web = app.test_client()
    for path, status in [("/assets/app.js", 200), ("/static/app.js", 404)]:
        response = web.get(path)
        response.close()  # a file response holds its file open until closed
        assert response.status_code == status


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


@pytest.mark.parametrize("path", ["/api/logout", "/api/conversations/{id}/reply"])
def test_bodyless_routes_refuse_non_json_bodies(alice: ChatClient, path: str) -> None:
    conv = alice.new_conversation()
    url = path.format(id=conv["id"])
    response = raw(
        alice, "POST", url, data=b"garbage", headers={**csrf(alice), "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    assert alice.session()["username"] == "alice"  # the session was not ended


def test_logout_accepts_an_empty_body(alice: ChatClient) -> None:
    assert raw(alice, "POST", "/api/logout", headers=csrf(alice)).status_code == 204
    assert_error(raw(alice, "GET", "/api/session"), 401)


# --- bodies nested too deeply to parse -------------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000  # well under 1 MiB; json.loads would recurse


@pytest.mark.parametrize("route", ["register", "login", "logout", "create", "send", "reply"])
def test_deeply_nested_json_is_a_400_on_every_body_route(
        alice: ChatClient, route: str, caplog: pytest.LogCaptureFixture) -> None:
    conv = alice.new_conversation()["id"]
    path = {"register": "/api/register", "login": "/api/login", "logout": "/api/logout",
            "create": "/api/conversations", "send": f"/api/conversations/{conv}/messages",
            "reply": f"/api/conversations/{conv}/reply"}[route]
    response = raw(alice, "POST", path, data=NESTED,
                   headers={"Content-Type": "application/json", **csrf(alice)})
    assert_error(response, 400, "invalid_json")
    # A client mistake: no traceback, no error line in the server's log.
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= 40]
