"""Tools for the attack lab: forge cookies, tamper with a database, audit web code for XSS sinks.

They play the attacker (or the auditor) against an app *you* run on 127.0.0.1; the
notebooks and the tests use the same functions, so what the lab shows is what is tested.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path

from flask import Flask
from itsdangerous import Signer

from ..server import sessions

# The page's own HTML and JavaScript, as shipped.
_SHIPPED = Path(__file__).resolve().parents[1] / "server" / "static"

# A stored-XSS payload: harmless as text, script when inserted as HTML (onerror runs).
# No quotes in it, so it survives JSON encoding unchanged and is easy to spot in a page.
XSS_PAYLOAD = "<img src=x onerror=alert(document.domain)>"

# JavaScript that turns text into markup or code; shipped JS must use none of them.
JS_SINKS: dict[str, str] = {
    "innerHTML": r"\binnerHTML\b",
    "outerHTML": r"\bouterHTML\b",
    "insertAdjacentHTML": r"\binsertAdjacentHTML\b",
    "createContextualFragment": r"\bcreateContextualFragment\b",
    "document.write": r"\bdocument\s*\.\s*write(?:ln)?\b",
    "eval": r"\beval\b",
    "new Function": r"\bFunction\s*\(",
    "string timer": r"\bset(?:Timeout|Interval)\s*\(\s*['\"`]",
}
WEB_SUFFIXES = (".js", ".mjs", ".html", ".htm")
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "xlink:href"})


# --- cookies -------------------------------------------------------------------------


def session_cookie_name(app: Flask) -> str:
    """The name of ``app``'s session cookie (``__Host-`` prefixed under HTTPS)."""
    with app.app_context():
        return sessions.cookie_name()


def forge_securechat_cookie(app: Flask, token: str, secret_key: str | bytes | None = None) -> str:
    """Sign ``token`` as ``app`` signs session cookies, with its secret or ``secret_key``.

    With the app's own secret this is what someone who stole the instance folder could do.
    """
    with app.app_context():
        signer = sessions.cookie_signer()
    if secret_key is not None:
        signer = Signer(secret_key, salt=signer.salt, key_derivation=signer.key_derivation,
                        digest_method=signer.digest_method)
    return signer.sign(token).decode("ascii")


def mask(secret: str, keep: int = 4) -> str:
    """Show only the first ``keep`` characters of a secret value, e.g. ``eyJ1…``."""
    return secret[:keep] + "…" if len(secret) > keep else "…"


# --- the database, as an attacker with write access sees it ----------------------------


def copy_ciphertext(database: str | Path, source: tuple[str, int],
                    target: tuple[str, int]) -> None:
    """Copy the stored ciphertext of message ``(conversation id, position)`` onto another.

    The attacker's own SQL, deliberately outside :mod:`securechat.store`: the app never
    moves ciphertext; this simulates someone who can write to the database file.
    """
    with closing(sqlite3.connect(database)) as db, db:
        row = db.execute("SELECT content FROM messages WHERE conversation_id = ? AND position = ?",
                         source).fetchone()
        if row is None:
            raise LookupError(f"no message at {source}")
        updated = db.execute(
            "UPDATE messages SET content = ? WHERE conversation_id = ? AND position = ?",
            (row[0], *target),
        ).rowcount
    if updated != 1:
        raise LookupError(f"no message at {target}")


# --- auditing web code for XSS sinks ----------------------------------------------------


def _strip_js_comments(source: str) -> str:
    """Blank out // and /* */ comments (keeping strings and line numbers)."""
    out: list[str] = []
    i, n, quote = 0, len(source), ""
    while i < n:
        c = source[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(source[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
            out.append(c)
        elif source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end - 1
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append(re.sub(r"[^\n]", " ", source[i:end]))
            i = end - 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def audit_js(source: str) -> list[str]:
    """Name every HTML/code sink in JavaScript ``source``, e.g. ``"line 3: innerHTML"``.

    Comments are ignored; strings are not (``el["innerHTML"]`` is still a sink).
    """
    return [f"line {line}: {name}" for line, name in _js_sinks(source)]


def _js_sinks(source: str) -> list[tuple[int, str]]:
    code = _strip_js_comments(source)
    found = [(code.count("\n", 0, match.start()) + 1, name)
             for name, pattern in JS_SINKS.items() for match in re.finditer(pattern, code)]
    return sorted(found)


class _HtmlAuditor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.findings: list[str] = []
        self._inline_script: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        for name, value in attrs:
            if name.startswith("on"):
                self.findings.append(f"line {line}: inline event handler {name}=")
            elif name in _URL_ATTRIBUTES and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.findings.append(f"line {line}: javascript: URL in {name}=")
        if tag == "script":
            self._inline_script = line

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inline_script = None

    def handle_data(self, data: str) -> None:
        start = self._inline_script
        if start is not None and data.strip():
            self.findings.append(f"line {start}: inline <script> body")
            # The body starts on the <script> tag's line.
            self.findings.extend(f"line {start + line - 1}: {name} in inline script"
                                 for line, name in _js_sinks(data))
            self._inline_script = None


def audit_html(source: str) -> list[str]:
    """Name every inline script, inline event handler and ``javascript:`` URL in ``source``."""
    auditor = _HtmlAuditor()
    auditor.feed(source)
    auditor.close()
    return auditor.findings


def shipped_web_files(folder: str | Path | None = None) -> list[Path]:
    """The JavaScript and HTML files under ``folder`` (default: the package's ``static``)."""
    root = Path(folder) if folder is not None else _SHIPPED
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in WEB_SUFFIXES and p.is_file())


def audit_file(path: str | Path) -> list[str]:
    """Audit one shipped file: JavaScript by :func:`audit_js`, HTML by :func:`audit_html`."""
    path = Path(path)
    text = path.read_text("utf-8")
    return audit_js(text) if path.suffix.lower() in (".js", ".mjs") else audit_html(text)


def audit_static(folder: str | Path | None = None) -> dict[str, list[str]]:
    """Findings per shipped web file under ``folder``; files without any are left out."""
    root = Path(folder) if folder is not None else _SHIPPED
    found = {str(p.relative_to(root)): audit_file(p) for p in shipped_web_files(root)}
    return {name: findings for name, findings in found.items() if findings}


# --- reporting --------------------------------------------------------------------------


def table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> str:
    """Format rows as a plain-text table (stable output for notebooks)."""
    lines = [list(header), *[list(map(str, row)) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
