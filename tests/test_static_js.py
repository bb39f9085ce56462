"""Shipped JS has no HTML/code sinks; shipped HTML has no inline script or handlers.

The checker itself is tested on synthetic input, so a clean result means something.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from securechat.lab import attacks, vulnerable

SHIPPED = attacks.shipped_web_files()


# --- what ships ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_file_is_clean(path: Path) -> None:
    assert attacks.audit_file(path) == []


def test_every_shipped_file_is_audited() -> None:
    # Whatever exists (possibly nothing yet) is clean, and every JS/HTML file is in the list.
    static = Path(attacks.__file__).parents[1] / "server" / "static"
    on_disk = sorted(p for p in static.rglob("*") if p.is_file()
                     and p.suffix.lower() in (".js", ".mjs", ".html", ".htm")) \
        if static.is_dir() else []
    assert SHIPPED == on_disk
    assert attacks.audit_static() == {}


def test_served_html_pages_are_clean(app: Flask) -> None:
    """Every HTML page the app serves (templates or files) passes the HTML audit."""
    http = app.test_client()
    audited = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.arguments or rule.rule.startswith("/api"):
            continue
        response = http.get(rule.rule)
        if response.status_code == 200 and response.mimetype == "text/html":
            assert attacks.audit_html(response.get_data(as_text=True)) == [], rule.rule
            audited += 1
        response.close()
    if any(p.name == "index.html" for p in SHIPPED):
        assert audited >= 1  # the page really was fetched and checked


# --- the checker catches each forbidden pattern -----------------------------------------


@pytest.mark.parametrize(("source", "sink"), [
    ("el.innerHTML = text;", "innerHTML"),
    ("el.innerHTML += '<p>' + m + '</p>';", "innerHTML"),
    ('el["innerHTML"] = text;', "innerHTML"),
    ("el.outerHTML = text;", "outerHTML"),
    ("el.insertAdjacentHTML('beforeend', text);", "insertAdjacentHTML"),
    ("range.createContextualFragment(text);", "createContextualFragment"),
    ("document.write(text);", "document.write"),
    ("document . writeln(text);", "document.write"),
    ("eval(text);", "eval"),
    ("window.eval(text);", "eval"),
    ("const f = window['eval'];", "eval"),
    ("const f = new Function('a', text);", "new Function"),
    ("const f = Function(text);", "new Function"),
    ("setTimeout('alert(1)', 10);", "string timer"),
    ("setInterval(`tick()`, 10);", "string timer"),
])
def test_js_checker_catches(source: str, sink: str) -> None:
    code = "const a = 1;\n" + source + "\n"
    assert attacks.audit_js(code) == [f"line 2: {sink}"]


@pytest.mark.parametrize("source", [
    "// never use innerHTML here\nel.textContent = text;",
    "/* eval( is forbidden;\n   so is document.write */ el.append(text);",
    "const url = 'http://example/'; // eval(",
    "setTimeout(() => tick(), 10); el.replaceChildren(node);",
    "const evaluate = 1; const medieval = 2; el.dataset.innerHTMLish = 0;",
])
def test_js_checker_accepts_safe_code(source: str) -> None:
    assert attacks.audit_js(source) == []


def test_js_checker_keeps_strings_that_look_like_comments() -> None:
    # A "//" inside a string or template is not a comment: what follows is still code.
    assert attacks.audit_js("const u = 'http://x'; el.innerHTML = u;") == ["line 1: innerHTML"]
    assert attacks.audit_js("const t = `/* ${a} */`; eval(t);") == ["line 1: eval"]
    assert attacks.audit_js('const q = "it\\"s"; el.outerHTML = q;') == ["line 1: outerHTML"]


@pytest.mark.parametrize(("source", "finding"), [
    ("<script>alert(1)</script>", "line 1: inline <script> body"),
    ("<p>\n<script type=module>\nimport('/x.js')\n</script>", "line 2: inline <script> body"),
    ('<img src=x onerror="alert(1)">', "line 1: inline event handler onerror="),
    ("<body ONLOAD='go()'>", "line 1: inline event handler onload="),
    ('<a href=" JavaScript:alert(1)">x</a>', "line 1: javascript: URL in href="),
    ('<form action="javascript:go()"></form>', "line 1: javascript: URL in action="),
])
def test_html_checker_catches(source: str, finding: str) -> None:
    assert finding in attacks.audit_html(source)


def test_html_checker_accepts_external_script() -> None:
    page = ('<!doctype html><html><head><script src="/assets/app.js" defer></script></head>'
            '<body><!-- <script>alert(1)</script> --><p>onclick= is just text</p></body></html>')
    assert attacks.audit_html(page) == []


def test_html_checker_flags_the_tutorial_page() -> None:
    findings = attacks.audit_html(vulnerable._PAGE % "[]")
    assert "line 5: inline <script> body" in findings
    assert "line 9: innerHTML in inline script" in findings


def test_audit_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "bad.js").write_text("x.innerHTML = y;\n", "utf-8")
    (tmp_path / "good.js").write_text("x.textContent = y;\n", "utf-8")
    (tmp_path / "page.html").write_text("<button onclick=go()>go</button>", "utf-8")
    (tmp_path / "notes.txt").write_text("innerHTML", "utf-8")
    assert [p.name for p in attacks.shipped_web_files(tmp_path)] == ["good.js", "bad.js",
                                                                     "page.html"]
    assert attacks.audit_static(tmp_path) == {
        "js/bad.js": ["line 1: innerHTML"],
        "page.html": ["line 1: inline event handler onclick="],
    }
    assert attacks.shipped_web_files(tmp_path / "missing") == []
