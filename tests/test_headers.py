"""Security headers on every response (errors included) and the session cookie's attributes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from securechat import create_app
from securechat.lab import attacks
from securechat.server import CSP

from .helpers import FAST, PASSWORD, AuthActions

ALWAYS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
HSTS = "Strict-Transport-Security"


def boom() -> Any:
    """A view that fails unexpectedly."""
    raise RuntimeError("kaboom")


@pytest.fixture
def settings() -> dict[str, Any]:
    """Rate limits on and tiny, and a small body limit, so 429 and 413 are cheap to reach."""
    return {**FAST, "RATELIMIT_ENABLED": True, "REGISTER_RATE_LIMIT": "1 per minute",
            "MAX_CONTENT_LENGTH": 2048}


@pytest.fixture
def app(settings: dict[str, Any], instance: Path) -> Flask:
    """The app with two failing routes, one under /api and one outside."""
    app = create_app(settings, instance_path=instance)
    app.add_url_rule("/api/boom", "api_boom", boom)
    app.add_url_rule("/boom", "page_boom", boom)
    return app


def log_in(http: FlaskClient) -> dict[str, str]:
    """Register (from its own address: registration is limited) and log in; the CSRF header."""
    auth = AuthActions(http)
    auth.register(environ_base={"REMOTE_ADDR": "10.0.0.9"})
    return auth.login()


@pytest.fixture
def logged_in(http: FlaskClient) -> dict[str, str]:
    """``http`` logged in; the CSRF header to send."""
    return log_in(http)


def assert_security_headers(response: TestResponse, https: bool = False) -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert (HSTS in response.headers) is https


def test_csp_is_strict() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"  # framing denied
    assert directives["base-uri"] == "'none'"
    assert "unsafe" not in CSP and "*" not in CSP and "data:" not in CSP


def _no_csrf(http: FlaskClient) -> TestResponse:
    log_in(http)
    return http.post("/api/conversations", json={})


def _too_many(http: FlaskClient) -> TestResponse:
    http.post("/api/register", json={"username": "spam1", "password": PASSWORD})
    return http.post("/api/register", json={"username": "spam2", "password": PASSWORD})


# name → (the status it must produce, the request).
CASES: dict[str, tuple[int, Callable[[FlaskClient], TestResponse]]] = {
    "200 health": (200, lambda c: c.get("/api/health")),
    "200 page": (200, lambda c: c.get("/")),
    "201 register": (201, lambda c: c.post("/api/register", json={
        "username": "newbie", "password": PASSWORD})),
    "204 logout": (204, lambda c: c.post("/api/logout")),
    "400 bad json": (400, lambda c: c.post("/api/login", data="{",
                                           content_type="application/json")),
    "401 no session": (401, lambda c: c.get("/api/session")),
    "403 no csrf": (403, _no_csrf),
    "404 api": (404, lambda c: c.get("/api/nowhere")),
    "404 page": (404, lambda c: c.get("/nowhere")),
    "405 api": (405, lambda c: c.delete("/api/health")),
    "413 api": (413, lambda c: c.post("/api/login", data=b"x" * 4096,
                                      content_type="application/json")),
    "415 api": (415, lambda c: c.post("/api/login", data="u=a", content_type="text/plain")),
    "429 api": (429, _too_many),
    "500 api": (500, lambda c: c.get("/api/boom")),
    "500 page": (500, lambda c: c.get("/boom")),
}


@pytest.mark.parametrize("name", CASES)
def test_headers_on_every_status(name: str, http: FlaskClient) -> None:
    status, send = CASES[name]
    response = send(http)
    response.close()  # file responses (the page) hold an open file until closed
    assert response.status_code == status, response.get_data(as_text=True)[:200]
    assert_security_headers(response)


@pytest.mark.parametrize("name", ["200 health", "404 api", "405 api", "413 api", "500 api",
                                  "500 page", "404 page", "200 page"])
def test_hsts_only_over_https(name: str, settings: dict[str, Any], instance: Path) -> None:
    app = create_app({**settings, "HTTPS": True}, instance_path=instance)
    app.add_url_rule("/api/boom", "api_boom", boom)
    app.add_url_rule("/boom", "page_boom", boom)
    status, send = CASES[name]
    response = send(app.test_client())
    response.close()
    assert response.status_code == status
    assert_security_headers(response, https=True)
    assert "max-age=" in response.headers[HSTS]


@pytest.mark.parametrize("path", ["/api/health", "/api/nowhere", "/api/boom", "/api/session"])
def test_api_responses_are_never_cached(http: FlaskClient, path: str) -> None:
    assert http.get(path).headers["Cache-Control"] == "no-store"


def test_authenticated_responses_are_never_cached(http: FlaskClient,
                                                  logged_in: dict[str, str]) -> None:
    # Outside /api too: a page fetched with the session cookie may show private data.
    for path in ("/", "/nowhere", "/boom"):
        response = http.get(path)
        response.close()
        assert "no-store" in response.headers["Cache-Control"], path


def test_streamed_replies_carry_the_headers(http: FlaskClient, logged_in: dict[str, str]) -> None:
    conv = http.post("/api/conversations", json={}, headers=logged_in).get_json()["id"]
    response = http.post(f"/api/conversations/{conv}/messages", json={"content": "hi"},
                         headers={**logged_in, "Accept": "text/event-stream"})
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert_security_headers(response)
    response.close()


def test_error_pages_outside_the_api_are_not_html_with_details(http: FlaskClient) -> None:
    response = http.get("/boom")
    assert response.status_code == 500
    assert response.get_data(as_text=True) == "Internal server error."
    assert response.mimetype == "text/plain"


# --- cookies ---------------------------------------------------------------------------


def _cookie_parts(header: str) -> tuple[str, set[str]]:
    name = header.split("=", 1)[0]
    return name, {p.strip().lower() for p in header.split(";")[1:]}


def test_logout_clears_the_cookie_with_the_same_attributes(http: FlaskClient,
                                                           logged_in: dict[str, str]) -> None:
    response = http.post("/api/logout", headers=logged_in)
    name, parts = _cookie_parts(response.headers["Set-Cookie"])
    assert name == "securechat_session"
    assert {"httponly", "samesite=lax", "path=/", "max-age=0"} <= parts


def test_login_cookie_lifetime_is_the_absolute_timeout(http: FlaskClient) -> None:
    http.post("/api/register", json={"username": "alice", "password": PASSWORD})
    response = http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    name, parts = _cookie_parts(response.headers["Set-Cookie"])
    assert name == "securechat_session"
    assert {"httponly", "samesite=lax", "path=/"} <= parts and "secure" not in parts
    assert "max-age=28800" in parts


def _https_login(settings: dict[str, Any], instance: Path) -> tuple[Flask, FlaskClient,
                                                                    TestResponse]:
    """An app configured for HTTPS, its test client, and alice's login over https."""
    app = create_app({**settings, "HTTPS": True}, instance_path=instance)
    http = app.test_client()
    http.post("/api/register", json={"username": "alice", "password": PASSWORD})
    login = http.post("/api/login", json={"username": "alice", "password": PASSWORD},
                      base_url="https://localhost")
    return app, http, login


def test_https_logout_clears_the_host_prefixed_cookie(settings: dict[str, Any],
                                                      instance: Path) -> None:
    app, http, login = _https_login(settings, instance)
    response = http.post("/api/logout", headers={"X-CSRF-Token": login.get_json()["csrf_token"]},
                         base_url="https://localhost")
    name, parts = _cookie_parts(response.headers["Set-Cookie"])
    assert name == "__Host-securechat"
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= parts
    assert not any(p.startswith("domain=") for p in parts)


def test_https_ignores_a_cookie_without_the_host_prefix(settings: dict[str, Any],
                                                        instance: Path) -> None:
    # A sibling subdomain or plain-http page can set "securechat_session" but never a
    # __Host- cookie; under HTTPS only the latter is read, so a planted cookie is ignored.
    app, http, login = _https_login(settings, instance)
    value = login.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    assert attacks.session_cookie_name(app) == "__Host-securechat"
    planted = app.test_client()
    planted.set_cookie("securechat_session", value)
    assert planted.get("/api/session", base_url="https://localhost").status_code == 401
    proper = app.test_client()
    proper.set_cookie("__Host-securechat", value, secure=True)
    assert proper.get("/api/session", base_url="https://localhost").status_code == 200
