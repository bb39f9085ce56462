"""An audit of committed notebooks: no live secret, no unexpected error, run top to bottom.

nbval checks that a notebook still produces its stored outputs; this checks the stored
outputs themselves. The tests run it over every notebook in ``notebooks/``; a reader can
run it over their own: ``scan_notebook(json.load(open(path)))``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MASK = "…"
# A masked value shows at most this many characters before the ellipsis.
MAX_VISIBLE = 8
# Below this length a cookie value cannot be a credential worth the name (e.g. "None").
MIN_COOKIE_VALUE = 16

_B64 = r"A-Za-z0-9_\-"
_CROCKFORD = "[0-9A-HJKMNP-TV-Z]"
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
    # securechat.recovery's codes: 26 Crockford base32 digits and a check symbol, in groups
    # of four (``XXXX-…-XX*``), in any case, with hyphens, spaces or nothing between groups.
    ("recovery code", re.compile(
        rf"(?<![0-9A-Za-z])(?:{_CROCKFORD}{{4}}[- ]?){{6}}{_CROCKFORD}{{2}}[0-9A-HJKMNP-TV-Z*~$=U]"
        r"(?![0-9A-Za-z])", re.IGNORECASE)),
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


def is_uuid4_hex(text: str) -> bool:
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
            if kind == "hex secret" and is_uuid4_hex(token):
                continue
            if kind == "base64 secret" and (is_uuid4_hex(token) or not _looks_random(token)):
                continue
            # No character of a recovery code goes into a report: its groups are short.
            shown = MASK + f" ({len(token)} chars)" if kind == "recovery code" else (
                _masked_excerpt(token))
            found.append((kind, shown))
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
