"""Property-based fuzzing of every route: never a 5xx, and under /api always the JSON error."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from securechat import create_app

from .helpers import FAST, PASSWORD

# The autouse fixture only isolates the environment; sharing it across examples is fine.
FUZZ = settings(max_examples=600, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
FIELDS = ["username", "password", "content", "title", "csrf_token", "id", "current_password",
          "new_password", "recovery_code", "starred", "regenerate", "messages",
          "retention_days", "q"]
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "APPLICATION/JSON", "application/problem+json", "text/plain", "text/html",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "application/octet-stream", "",
]
HEADER_NAMES = [
    "Accept", "X-CSRF-Token", "Cookie", "Origin", "Referer", "X-Forwarded-For",
    "X-Forwarded-Proto", "Content-Encoding", "Range", "If-None-Match", "Authorization",
    "Accept-Encoding", "X-Requested-With",
]
ACCEPTS = ["text/event-stream", "application/json", "text/html", "*/*", ""]

# Text, sometimes with lone surrogates: valid JSON ("\udc00") but not encodable as UTF-8.
# (st.text never yields surrogates, hence the list of characters.)
any_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.characters() | st.characters(categories=["Cs"]), max_size=40).map("".join),
)
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                     exclude_characters="\x7f"), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.sampled_from(FIELDS) | any_text, json_values, max_size=5)


def _json_text(value: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \\u escapes, which is what an attacker can send.
    return json.dumps(value, ensure_ascii=True).encode("ascii")


bodies = st.one_of(
    json_objects.map(_json_text),
    json_values.map(_json_text),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b'{"username": "abc", "password": 1}', b"\xff\xfe{}",
                     b"[]"]),
)


def _quoted(text: str, safe: str = "") -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


# Values a field is given: plausible ones (so requests get past the first check) and junk.
field_values = st.one_of(
    st.sampled_from(["fuzzer", "FUZZER", "alice", PASSWORD, "hello", "x" * 8, "", " "]),
    st.tuples(st.sampled_from(["fuzzer", PASSWORD, "a message"]), any_text).map("".join),
    any_text, json_values,
)
plausible_objects = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4)
# The fields each view reads, always present in a well-formed body.
VIEW_FIELDS = {"auth.register": ("username", "password"), "auth.login": ("username", "password"),
               "chat.create": ("title",), "chat.send": ("content",)}
query_values = st.one_of(st.integers().map(str), any_text, st.sampled_from(["9" * 30, "-9" * 30,
                                                                            "1e3", "0x10"]))
queries = st.dictionaries(st.sampled_from(["limit", "before", "x"]), query_values, max_size=2)


@st.composite
def fuzzed_requests(draw: st.DrawFn, app: Flask, real_id: str, csrf: str | None,
                    skip: tuple[str, ...] = ()) -> tuple[str, str, dict[str, str], str, bytes]:
    """A (method, path, headers, content type, body): mostly well-formed, sometimes junk."""
    rules = sorted((r for r in app.url_map.iter_rules() if r.endpoint not in skip),
                   key=lambda r: (r.rule, r.endpoint))
    rule = draw(st.sampled_from(rules))
    well_formed = draw(st.booleans())
    segment = st.sampled_from([real_id]) if well_formed and rule.endpoint != "chat.delete" \
        else st.one_of(any_text.filter(bool), st.sampled_from(["..", "%00", "0" * 40, "-1"]))
    parts = rule.rule.replace(">", "<").split("<")
    # Odd parts are the rule's variables, e.g. "conv_id" or "path:filename".
    path = "".join(_quoted(draw(segment)) if i % 2 else p for i, p in enumerate(parts))
    if not well_formed:
        path = draw(st.sampled_from([path, path + "/", path + "/x",
                                     "/" + _quoted(draw(any_text), "/"),
                                     "/api/" + _quoted(draw(any_text), "/")]))
    params = draw(queries)
    if params:
        path += "?" + "&".join(f"{k}={_quoted(v)}" for k, v in params.items())
    allowed = sorted(rule.methods - {"HEAD", "OPTIONS"})
    method = draw(st.sampled_from(allowed) if well_formed else st.sampled_from(METHODS))
    csrf_values = st.sampled_from([csrf]) if csrf else header_value
    headers = draw(st.fixed_dictionaries(
        {"Accept": st.sampled_from(ACCEPTS)},
        optional={"X-CSRF-Token": csrf_values,
                  **{h: header_value for h in HEADER_NAMES if h not in ("X-CSRF-Token", "Accept")}},
    ))
    if well_formed:
        if csrf:
            headers["X-CSRF-Token"] = csrf
        fields = VIEW_FIELDS.get(rule.endpoint, ())
        body = draw(st.fixed_dictionaries(
            {f: field_values for f in fields},
            optional={f: field_values for f in FIELDS if f not in fields}))
        return method, path, headers, "application/json", _json_text(body)
    ctype = draw(st.sampled_from(CONTENT_TYPES) | header_value)
    return method, path, headers, ctype, draw(bodies | plausible_objects.map(_json_text))


def send(client: FlaskClient, method: str, path: str, headers: dict[str, str],
         content_type: str, body: bytes) -> TestResponse:
    """One fuzzed request; the body read whole (streams included) and closed."""
    response = client.open(path, method=method, headers=headers, data=body,
                           content_type=content_type or None)
    response.get_data()
    response.close()
    return response


def check(response: TestResponse, method: str) -> None:
    """The contract: no 5xx, security headers everywhere, JSON errors under /api."""
    path = response.request.path
    assert response.status_code < 500, (method, path, response.status_code, response.data[:300])
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert "frame-ancestors 'none'" in response.headers.get("Content-Security-Policy", "")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if path.startswith("/api") and response.status_code >= 400 and method != "HEAD":
        assert response.mimetype == "application/json", (path, response.status_code, text[:200])
        body = json.loads(text)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
        assert all(isinstance(v, str) and v for v in body["error"].values())
    if path.startswith("/api"):
        assert response.headers.get("Cache-Control") == "no-store"


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One app for the module; limits on (huge) so the limiter's key functions run too."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("SECURECHAT_")]:
            mp.delenv(name)
        mp.chdir(folder)
        config = {**FAST, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "100000 per minute",
                  "REGISTER_RATE_LIMIT": "100000 per minute",
                  "CHAT_RATE_LIMIT": "100000 per minute"}
        yield create_app(config, instance_path=folder / "instance")


@pytest.fixture(scope="module")
def session(fuzz_app: Flask) -> tuple[FlaskClient, str, str]:
    """A logged-in test client, its CSRF token and one of its conversations."""
    client = fuzz_app.test_client()
    # Not one of the names the fuzzer samples: the anonymous run may register those first.
    owner = "owner.of-the-session"
    assert client.post("/api/register", json={"username": owner,
                                              "password": PASSWORD}).status_code == 201
    login = client.post("/api/login", json={"username": owner, "password": PASSWORD})
    csrf = login.get_json()["csrf_token"]
    conv = client.post("/api/conversations", json={"title": "fuzz"},
                       headers={"X-CSRF-Token": csrf}).get_json()
    return client, csrf, conv["id"]


def test_fuzz_anonymous(fuzz_app: Flask) -> None:
    client = fuzz_app.test_client()

    @FUZZ
    @given(fuzzed_requests(fuzz_app, "0" * 32, None))
    def run(req: tuple[str, str, dict[str, str], str, bytes]) -> None:
        check(send(client, *req), req[0])

    run()


def test_fuzz_authenticated(fuzz_app: Flask, session: tuple[FlaskClient, str, str]) -> None:
    client, csrf, conv_id = session

    # Logging out, or deleting the account (its password is among the values a field gets),
    # would end the session the rest of the examples are meant to use.
    @FUZZ
    @given(fuzzed_requests(fuzz_app, conv_id, csrf,
                           skip=("auth.logout", "account.delete_account")))
    def run(req: tuple[str, str, dict[str, str], str, bytes]) -> None:
        check(send(client, *req), req[0])

    run()
    assert client.get("/api/session").status_code == 200  # the fuzzing really was logged in
