"""Committed notebooks: executed top to bottom, no unexpected errors, no live secret in an output.

nbval checks that a notebook still produces its stored outputs; these tests check the stored
outputs themselves, for every notebook in ``notebooks/`` (including ones added later).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cryptography.fernet import Fernet

from securechat.crypto import new_token
from securechat.vulnerable import PUBLISHED_SECRET, forge_session_cookie

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MASK = "…"
# A masked value shows at most this many characters before the ellipsis.
MAX_VISIBLE = 8
# Below this length a cookie value cannot be a credential worth the name (e.g. "None").
MIN_COOKIE_VALUE = 16

_B64 = r"A-Za-z0-9_\-"
_COOKIE_VALUE = r"(?P<value>[^;\s'\",]*)"
# Each rule: (kind, pattern). Cookie rules capture a "value" that may be masked.
RULES: list[tuple[str, re.Pattern[str]]] = [
    # Version byte 0x80 and a timestamp always encode as gAAAAA; a real token is 100+ chars.
    ("Fernet token", re.compile(rf"gAAAAA[{_B64}=]{{{MAX_VISIBLE},}}")),
    # 32 bytes in URL-safe base64: 43 characters and one '=' of padding.
    ("Fernet key", re.compile(rf"(?<![{_B64}])[{_B64}]{{43}}=(?![{_B64}=])")),
    # itsdangerous / Flask session cookies and JWTs: base64 JSON '.' timestamp '.' signature.
    ("signed cookie",
     re.compile(rf"(?:\beyJ|\.eJ)[{_B64}]{{4,}}\.[{_B64}]{{4,}}\.[{_B64}]{{16,}}")),
    ("Set-Cookie value", re.compile(
        rf"Set-Cookie['\"]?\s*[:=]?\s*['\"]?[^=;\s'\"]+={_COOKIE_VALUE}", re.IGNORECASE)),
    ("securechat session cookie", re.compile(
        rf"(?:securechat_session|__Host-securechat)['\"]?\s*[=:]\s*['\"]?{_COOKIE_VALUE}")),
    ("session cookie", re.compile(rf"(?<![{_B64}])session={_COOKIE_VALUE}")),
    # The repr of http.cookiejar.Cookie, as printed for a requests cookie jar.
    ("cookie object", re.compile(r"Cookie\(version=[^)]*?\bvalue='(?P<value>[^']*)'")),
    ("hex secret", re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")),
    ("base64 secret", re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}")),
]
_COOKIE_RULES = {"Set-Cookie value", "securechat session cookie", "session cookie",
                 "cookie object"}
# Identifiers, not secrets: uuid4 hex ids (conversations, messages, widget models). Every
# secret securechat makes is 256 bits or more, so a 128-bit uuid4 layout is never one of them.
_UUID4_HEX = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
_WIDGET_REF = re.compile(r"IPY_MODEL_([0-9a-f]{32})")
# Outputs that are binary payloads, not text a person reads.
_BINARY_MIME = re.compile(r"image/(?!svg)|application/pdf|application/octet-stream")


def _is_uuid4_hex(text: str) -> bool:
    return bool(_UUID4_HEX.fullmatch(text))


def _cookie_value_masked(value: str) -> bool:
    """True for an empty, placeholder or ellipsis-masked cookie value."""
    if MASK in value:
        return len(value.split(MASK, 1)[0]) <= MAX_VISIBLE
    return len(value) < MIN_COOKIE_VALUE or value.startswith("<") or set(value) <= set("*•xX")


def _looks_random(run: str) -> bool:
    # Random base64 of 32+ characters has both cases with overwhelming probability; paths,
    # snake_case names and constants usually do not.
    return any(c.isupper() for c in run) and any(c.islower() for c in run)


def _masked_excerpt(text: str) -> str:
    """What a failure message may show of a finding (never the secret itself)."""
    return text[:4] + MASK + f" ({len(text)} chars)"


def find_secrets(text: str) -> list[tuple[str, str]]:
    """Return ``(kind, masked excerpt)`` for everything in ``text`` that looks like a secret."""
    text = _WIDGET_REF.sub(lambda m: "IPY_MODEL_ ", text) if "IPY_MODEL_" in text else text
    found: list[tuple[str, str]] = []
    for kind, pattern in RULES:
        for match in pattern.finditer(text):
            if kind in _COOKIE_RULES:
                value = match.group("value")
                if _cookie_value_masked(value):
                    continue
                found.append((kind, _masked_excerpt(value)))
                continue
            token = match.group(0)
            if kind == "hex secret" and _is_uuid4_hex(token):
                continue
            if kind == "base64 secret" and (_is_uuid4_hex(token) or not _looks_random(token)):
                continue
            found.append((kind, _masked_excerpt(token)))
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _output_texts(output: dict[str, Any]) -> Iterator[str]:
    for key, value in output.items():
        if key == "data":
            for mime, payload in value.items():
                if not _BINARY_MIME.match(mime):
                    yield from _strings(payload)
        else:
            yield from _strings(value)


def scan_notebook(nb: dict[str, Any]) -> list[str]:
    """Problems: secrets in any cell output or in the saved widget state."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            for text in _output_texts(output):
                problems += [f"cell {index}: {kind} {excerpt}"
                             for kind, excerpt in find_secrets(text)]
    # ipywidgets can save widget values (a typed password!) in the notebook's metadata.
    for text in _strings(nb.get("metadata", {}).get("widgets", {})):
        problems += [f"widget state: {kind} {excerpt}" for kind, excerpt in find_secrets(text)]
    return problems


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _raises_on_purpose(cell: dict[str, Any]) -> bool:
    """Marked like nbval: a ``# NBVAL_RAISES_EXCEPTION`` comment or a raises-exception tag."""
    tags = cell.get("metadata", {}).get("tags", [])
    if "raises-exception" in tags or "nbval-raises-exception" in tags:
        return True
    return any(line.strip().lstrip("#").strip() == "NBVAL_RAISES_EXCEPTION"
               for line in _source(cell).splitlines() if line.strip().startswith("#"))


def error_problems(nb: dict[str, Any]) -> list[str]:
    """Problems: error outputs (or tracebacks on stderr) in cells not marked to raise."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or _raises_on_purpose(cell):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: unexpected {output.get('ename')}")
            elif (output.get("output_type") == "stream"
                  and "Traceback (most recent call last)" in "".join(_strings(output.get("text")))):
                problems.append(f"cell {index}: a traceback on {output.get('name')}")
    return problems


def execution_problems(nb: dict[str, Any]) -> list[str]:
    """Problems: code cells never executed, or not executed 1, 2, 3… top to bottom."""
    problems = []
    expected = 1
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or not _source(cell).strip():
            continue  # Jupyter does not execute an empty cell
        count = cell.get("execution_count")
        if count is None:
            problems.append(f"cell {index}: never executed")
        elif count != expected:
            problems.append(f"cell {index}: execution_count {count}, expected {expected}")
        expected += 1
    return problems


def widget_state_problems(nb: dict[str, Any]) -> list[str]:
    """Problems: saved widget state, which holds what the widgets last showed (chats, titles)."""
    if "widgets" not in nb.get("metadata", {}):
        return []
    state = nb["metadata"]["widgets"].get("application/vnd.jupyter.widget-state+json", {})
    return [f"metadata.widgets holds {len(state.get('state', {}))} widget models: "
            "execute with --ExecutePreprocessor.store_widget_state=False"]


# --- the committed notebooks -------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_tutorial_notebooks_are_committed() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01_setup.ipynb", "02_encryption.ipynb", "03_sessions.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_secret_in_committed_outputs(path: Path) -> None:
    assert scan_notebook(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_unexpected_error_output(path: Path) -> None:
    assert error_problems(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_executed_top_to_bottom(path: Path) -> None:
    problems = execution_problems(_load(path))
    assert problems == [], f"re-run it with `make notebooks`: {problems}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_saved_widget_state(path: Path) -> None:
    # A chat box's state is the visible conversation in plain text, outside the encrypted store.
    assert widget_state_problems(_load(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_is_a_valid_notebook(path: Path) -> None:
    nbformat.validate(nbformat.read(path, as_version=4))


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
@pytest.mark.parametrize("name", ["fernet-token", "app-secret-key", "securechat-cookie"])
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
            if _is_uuid4_hex(text):
                continue  # the one documented exception (1 in 64 of 128-bit hex strings)
            assert find_secrets(text), "a random secret went unnoticed"


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
