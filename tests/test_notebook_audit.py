"""The notebook audit catches each kind of live secret, error and out-of-order run (and no more)."""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cryptography.fernet import Fernet

from securechat.crypto import new_token
from securechat.lab.notebook_audit import (
    error_problems,
    execution_problems,
    find_secrets,
    is_uuid4_hex,
    scan_notebook,
    widget_state_problems,
)
from securechat.lab.vulnerable import PUBLISHED_SECRET, forge_session_cookie
from securechat.recovery import RecoveryCode, new_code

# --- the scanner catches each kind of secret ------------------------------------------

def _flask_cookie() -> str:
    return forge_session_cookie(PUBLISHED_SECRET, {"user_id": "admin"})


def _signed_token() -> str:
    # securechat's cookie shape: a random token, '.', an itsdangerous signature.
    return f"{new_token()}.{base64.urlsafe_b64encode(os.urandom(20)).rstrip(b'=').decode()}"


def _hex_128_not_uuid4() -> str:
    h = secrets.token_hex(16)
    return h[:12] + "0" + h[13:]  # version nibble 0: not a uuid4 layout


SECRETS: dict[str, tuple[str, Callable[[], str]]] = {
    "fernet-token": ("Fernet token",
                     lambda: Fernet(Fernet.generate_key()).encrypt(b"hi").decode()),
    "fernet-key": ("Fernet key", lambda: Fernet.generate_key().decode()),
    "fernet-key-bytes-repr": ("Fernet key", lambda: repr(Fernet.generate_key())),
    "hex-256": ("hex secret", lambda: secrets.token_hex(32)),
    "hex-128": ("hex secret", _hex_128_not_uuid4),
    "hex-upper": ("hex secret", lambda: secrets.token_hex(32).upper()),
    "app-secret-key": ("base64 secret", lambda: secrets.token_urlsafe(48)),
    "session-token": ("base64 secret", new_token),
    "standard-base64": ("base64 secret", lambda: base64.b64encode(os.urandom(33)).decode()),
    "set-cookie-header": ("Set-Cookie value",
                          lambda: "Set-Cookie: sid=opaque-session-value-0001; HttpOnly"),
    "set-cookie-dict": ("Set-Cookie value",
                        lambda: f"{{'Set-Cookie': 'securechat_session={_signed_token()}; "
                                "Path=/'}"),
    "securechat-cookie": ("securechat session cookie",
                          lambda: f"securechat_session={_signed_token()}"),
    "securechat-cookie-jar": ("securechat session cookie",
                              lambda: "<RequestsCookieJar[<Cookie securechat_session="
                                      f"{_signed_token()} for 127.0.0.1/>]>"),
    "securechat-cookie-dict": ("securechat session cookie",
                               lambda: f"{{'securechat_session': '{_signed_token()}'}}"),
    "host-cookie": ("securechat session cookie",
                    lambda: f"__Host-securechat={_signed_token()}; Secure"),
    "flask-session-cookie": ("session cookie", lambda: f"Cookie: session={_flask_cookie()}"),
    "flask-cookie-alone": ("signed cookie", _flask_cookie),
    "lowercase-session-value": ("session cookie",
                                lambda: "session=abcdefghijklmnop-0123456789"),
    "recovery-code": ("recovery code", new_code),
    "recovery-code-lowercase": ("recovery code", lambda: new_code().lower()),
    "recovery-code-unhyphenated": ("recovery code", lambda: new_code().replace("-", "")),
    "recovery-code-spaced": ("recovery code", lambda: new_code().replace("-", " ")),
    "recovery-code-repr": ("recovery code", lambda: repr({"recovery_code": new_code()})),
    "cookie-jar-repr": ("cookie object",
                        lambda: "<RequestsCookieJar[Cookie(version=0, name='sid', "
                                "value='opaque-session-value-0001', port=None)]>"),
}


def _notebook(output: dict[str, Any] | None = None, *, source: str = "x = 1",
              widgets: dict[str, Any] | None = None) -> dict[str, Any]:
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    if output is not None:
        cell.outputs = [nbformat.from_dict(output)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    if widgets is not None:
        nb.metadata["widgets"] = widgets
    return nb


PLACES: dict[str, Callable[[str], dict[str, Any]]] = {
    "stdout": lambda s: _notebook(nbformat.v4.new_output("stream", name="stdout", text=s)),
    "stderr": lambda s: _notebook(nbformat.v4.new_output("stream", name="stderr", text=s)),
    "result": lambda s: _notebook(nbformat.v4.new_output(
        "execute_result", data={"text/plain": s}, execution_count=1)),
    "html": lambda s: _notebook(nbformat.v4.new_output(
        "display_data", data={"text/html": [f"<pre>{s}</pre>"]})),
    "json": lambda s: _notebook(nbformat.v4.new_output(
        "display_data", data={"application/json": {"nested": [s]}})),
    "error": lambda s: _notebook(nbformat.v4.new_output(
        "error", ename="ValueError", evalue=s, traceback=[s])),
    "widget-state": lambda s: _notebook(widgets={
        "application/vnd.jupyter.widget-state+json": {"state": {
            uuid.uuid4().hex: {"model_name": "TextModel", "state": {"value": s}}}}}),
}


@pytest.mark.parametrize("name", list(SECRETS))
def test_scanner_catches_each_kind(name: str) -> None:
    kind, make = SECRETS[name]
    text = make()
    found = find_secrets(f"some output: {text} (end)")
    assert kind in {k for k, _ in found}, found


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("name", ["fernet-token", "app-secret-key", "securechat-cookie",
                                  "recovery-code"])
def test_scanner_looks_in_every_output_place(place: str, name: str) -> None:
    secret = SECRETS[name][1]()
    problems = scan_notebook(PLACES[place](secret))
    assert problems, f"{name} in {place} was not found"
    # A failure report must not itself leak what it found.
    assert all(secret not in p and secret[8:40] not in p for p in problems)


def test_scanner_catches_many_random_secrets() -> None:
    # The base64 rule relies on mixed case; check it on many fresh keys, not one lucky one.
    for _ in range(300):
        for make in (lambda: secrets.token_urlsafe(24), new_token, lambda: secrets.token_hex(16)):
            text = make()
            if is_uuid4_hex(text):
                continue  # the one documented exception (1 in 64 of 128-bit hex strings)
            assert find_secrets(text), "a random secret went unnoticed"


def test_scanner_catches_every_planted_recovery_code() -> None:
    # Each code is checked in the forms a notebook could print it: as made, unhyphenated,
    # lower case, and inside the register answer's dict.
    for _ in range(300):
        code = new_code()
        for shown in (code, code.replace("-", ""), code.lower(), f"{{'recovery_code': '{code}'}}"):
            nb = PLACES["stdout"](f"saved: {shown}\n")
            assert [p.split(" ")[2:4] for p in scan_notebook(nb)] == [["recovery", "code"]], shown


def test_a_masked_recovery_code_passes() -> None:
    masked = RecoveryCode(new_code())
    for place in PLACES.values():
        assert scan_notebook(place(f"{masked!r} {masked} {masked._repr_html_()}")) == []


def test_scanner_ignores_binary_images() -> None:
    png = base64.b64encode(os.urandom(300)).decode()
    nb = _notebook(nbformat.v4.new_output("display_data", data={"image/png": png}))
    assert scan_notebook(nb) == []


MASKED_OR_HARMLESS = [
    "token: gAAAAA… (120 characters)",
    "key: 44 characters (not printed)",
    f"key: {Fernet.generate_key().decode()[:4]}…",
    "forged cookie: eyJ1…",
    "securechat_session=<hidden>",
    "securechat_session=_2b2…",
    "Set-Cookie: securechat_session=abcd…; HttpOnly; Path=/; SameSite=Lax",
    "Set-Cookie: securechat_session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
    "value:    <hidden> 43 characters of random token + '.' + 27 characters of signature",
    "{'username': 'bob', 'csrf_token': '<43 characters>'}",
    "cookies held: ['securechat_session']",
    "Cookie(version=0, name='securechat_session', value='<hidden>', port=None)",
    "Client(session=None)",
    f"a stored record failed to decrypt on GET /api/conversations/{uuid.uuid4().hex}/messages",
    f"IPY_MODEL_{uuid.uuid4().hex}",
    "data key 01 b4618fd5… (61 bytes)",
    str(Path(tempfile.gettempdir(), "pytest-of-root", "pytest-12", "test_notebook_outputs0",
             "instance", "securechat.sqlite3")),
    "test_register_login_send_history_and_more",
    "SESSION_ABSOLUTE_TIMEOUT_IN_SECONDS_FOR_ALL",
    "Content-Security-Policy: default-src 'none'; script-src 'self'",
    "<BackgroundServer http://127.0.0.1:PORT>",
    "0x7f3a2b1c4d5e",
]


@pytest.mark.parametrize("text", MASKED_OR_HARMLESS)
def test_scanner_passes_masked_and_harmless_text(text: str) -> None:
    assert find_secrets(text) == []


@pytest.mark.parametrize("place", list(PLACES))
def test_scanner_passes_masked_values_everywhere(place: str) -> None:
    assert scan_notebook(PLACES[place]("securechat_session=<hidden> gAAAAA… eyJ1…")) == []


# --- error outputs and execution order ---------------------------------------------

def _error_output() -> dict[str, Any]:
    return nbformat.v4.new_output("error", ename="ConfigError", evalue="refused", traceback=[])


def test_error_output_without_marker_is_reported() -> None:
    assert error_problems(_notebook(_error_output())) == ["cell 0: unexpected ConfigError"]


@pytest.mark.parametrize("source", ["# NBVAL_RAISES_EXCEPTION\ncreate_app()",
                                    "  #  NBVAL_RAISES_EXCEPTION\ncreate_app()"])
def test_error_output_with_comment_marker_is_allowed(source: str) -> None:
    assert error_problems(_notebook(_error_output(), source=source)) == []


@pytest.mark.parametrize("tag", ["raises-exception", "nbval-raises-exception"])
def test_error_output_with_tag_is_allowed(tag: str) -> None:
    nb = _notebook(_error_output())
    nb.cells[0].metadata["tags"] = [tag]
    assert error_problems(nb) == []


def test_marker_inside_a_string_does_not_count() -> None:
    nb = _notebook(_error_output(), source="print('NBVAL_RAISES_EXCEPTION')")
    assert error_problems(nb) != []


def test_traceback_on_stderr_is_reported() -> None:
    text = "Exception in thread x:\nTraceback (most recent call last):\n  ...\nKeyError: 1\n"
    nb = _notebook(nbformat.v4.new_output("stream", name="stderr", text=text))
    assert error_problems(nb) == ["cell 0: a traceback on stderr"]


# --- saved widget state ---------------------------------------------------------------

_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.mark.parametrize("widgets", [
    {_WIDGET_STATE: {"state": {uuid.uuid4().hex: {
        "model_name": "HTMLModel", "state": {"value": "<div>You</div>my private question"}}},
        "version_major": 2, "version_minor": 0}},
    {_WIDGET_STATE: {"state": {}, "version_major": 2, "version_minor": 0}},
    {},
], ids=["a-chat-bubble", "empty-state", "empty-key"])
def test_saved_widget_state_is_reported(widgets: dict[str, Any]) -> None:
    problems = widget_state_problems(_notebook(widgets=widgets))
    assert len(problems) == 1 and "store_widget_state=False" in problems[0]
    assert "private" not in problems[0]  # the report does not repeat what it found


def test_notebook_without_widget_state_passes() -> None:
    assert widget_state_problems(_notebook(nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {
            "model_id": uuid.uuid4().hex, "version_major": 2, "version_minor": 0}}))) == []


def _cells(*counts: int | None, sources: list[str] | None = None) -> dict[str, Any]:
    sources = sources or ["x = 1"] * len(counts)
    cells = [nbformat.v4.new_code_cell(s, execution_count=c)
             for s, c in zip(sources, counts, strict=True)]
    return nbformat.v4.new_notebook(cells=cells)


def test_executed_in_order_passes() -> None:
    assert execution_problems(_cells(1, 2, 3)) == []


def test_unexecuted_cell_is_reported() -> None:
    assert execution_problems(_cells(1, None, 3)) == ["cell 1: never executed"]


def test_out_of_order_execution_is_reported() -> None:
    assert execution_problems(_cells(1, 3, 2)) == [
        "cell 1: execution_count 3, expected 2", "cell 2: execution_count 2, expected 3"]


def test_rerun_in_a_used_kernel_is_reported() -> None:
    assert execution_problems(_cells(7, 8)) != []


def test_empty_cells_need_no_execution() -> None:
    assert execution_problems(_cells(1, None, 2, sources=["x = 1", "  \n", "y = 2"])) == []
