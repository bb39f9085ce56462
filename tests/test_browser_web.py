"""The web page at / in a real Chromium: text stays text, the CSP holds, state survives reloads."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import pytest
from flask import Flask
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from securechat import BackgroundServer, create_app
from securechat.backends import Turn
from securechat.protocol import MAX_PASSWORD, MIN_PASSWORD, USERNAME_RE
from securechat.server import CSP
from securechat.widgets.markdown import TAGS, render_markdown
from tests import browser_helpers
from tests.browser_helpers import chromium, register, screenshot
from tests.fake_backend import Flaky
from tests.helpers import FAST
from tests.markdown_helpers import CASES, DOM_TREE_FUNCTION, DOM_TREE_JS, html_tree

STATIC = Path(__file__).resolve().parents[1] / "securechat" / "server" / "static"
PASSWORD = "correct horse battery"
PAYLOADS = ['<img src=x onerror="window.pwned=1">', "<script>window.pwned=1</script>"]

# Runs before the page's own scripts (injected by the browser driver, so the CSP does
# not apply to it): it records every CSP violation the page causes.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


# --- static checks of the page's files (no browser needed) ----------------------------

class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_has_no_inline_script_style_or_handlers() -> None:
    parser = _Tags()
    parser.feed((STATIC / "index.html").read_text("utf-8"))
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/") for attrs in scripts)
    assert not [tag for tag, _ in parser.tags if tag == "style"]
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)


@pytest.mark.parametrize("name", ["app.js", "markdown.js"])
def test_script_never_builds_html_from_strings(name: str) -> None:
    source = (STATIC / name).read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "setTimeout('"):
        assert sink not in source, sink
    if name == "app.js":
        assert "textContent" in source and "X-CSRF-Token" in source
    else:
        # Elements are made from the tree's tag names, and only from the fixed set.
        assert source.count("createElement(") == 1
        assert "TAGS.includes(node.tag)" in source


def _code_lines(source: str) -> list[str]:
    """The lines of a script of ours without its comments (block, and whole-line //)."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return [line for line in source.splitlines() if not line.lstrip().startswith("//")]


@pytest.mark.parametrize("name", ["app.js", "markdown.js"])
def test_script_keeps_nothing_in_browser_storage(name: str) -> None:
    # The CSRF token, recovery codes and temporary chats live in the page's memory only:
    # nothing that outlives the tab (or that another script of the origin could read later).
    code = "\n".join(_code_lines((STATIC / name).read_text("utf-8")))
    for store in ("localStorage", "sessionStorage", "indexedDB", "document.cookie", "caches."):
        assert store not in code, store
    assert _code_lines("// localStorage\n/* sessionStorage */ x = 1;") == [" x = 1;"]


def _input_attributes(input_id: str) -> dict[str, str | None]:
    parser = _Tags()
    parser.feed((STATIC / "index.html").read_text("utf-8"))
    (attrs,) = [a for tag, a in parser.tags if tag == "input" and a.get("id") == input_id]
    return attrs


def _text_of_id(element_id: str) -> str:
    html = (STATIC / "index.html").read_text("utf-8")
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return " ".join(unescape(match.group(1)).split())


NAMES = ["ab", "abc", "a" * 32, "a" * 33, "bad name", "ok_name.1-2", "x-y", "\u00e9mile",
         "semi;colon", "-.-", "tab\tname", "a" * 3 + "!"]


def test_form_constraints_match_the_server_rules() -> None:
    username, password = _input_attributes("username"), _input_attributes("password")
    assert username["minlength"] == "3" and password["minlength"] == str(MIN_PASSWORD)
    # The pattern accepts exactly the names the server accepts.
    pattern = re.compile(str(username["pattern"]))
    for name in NAMES:
        assert bool(pattern.fullmatch(name)) == bool(USERNAME_RE.fullmatch(name)), name
    # maxlength would silently cut a longer pasted value (and counts UTF-16 units, so it
    # would refuse some passwords the server takes): the server's answer says it instead.
    assert "maxlength" not in username and "maxlength" not in password
    # The rules are on the form, tied to their inputs.
    assert username["aria-describedby"] == "username-rules"
    assert password["aria-describedby"] == "password-rules"
    assert "3–32" in _text_of_id("username-rules")
    assert "A–Z a–z" in _text_of_id("username-rules")
    assert "_ . -" in _text_of_id("username-rules")
    assert f"{MIN_PASSWORD}–{MAX_PASSWORD} characters" in _text_of_id("password-rules")


def test_page_and_assets_are_served_with_the_csp(app: Flask) -> None:
    web = app.test_client()
    for path, kind in [("/", "text/html"), ("/assets/app.js", "text/javascript"),
                       ("/assets/markdown.js", "text/javascript"),
                       ("/assets/app.css", "text/css"), ("/favicon.ico", "image/svg+xml")]:
        response = web.get(path)
        response.close()  # a file response keeps its file open until closed
        assert response.status_code == 200, path
        assert response.mimetype == kind
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- in the browser ------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # One Chromium for the module (each test has a context of its own): launching one per
    # test cost more than most tests.
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    context.add_init_script(script=RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(30_000)
    complaints: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            complaints.append(message.text)

    page.on("console", on_console)
    _console[page] = complaints
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(f"uncaught: {error}"))

    def on_console_error(message: ConsoleMessage) -> None:
        # An HTTP error status (the 401 of /api/session before login) is logged as a
        # failed resource load; anything else on the error console is a bug of the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            failures.append(message.text)

    page.on("console", on_console_error)
    _errors[page] = failures
    yield page
    context.close()


_console: WeakKeyDictionary[Page, list[str]] = WeakKeyDictionary()
_errors: WeakKeyDictionary[Page, list[str]] = WeakKeyDictionary()


def violations(page: Page) -> list[Any]:
    """CSP violations seen by the page's listener plus CSP complaints on its console."""
    return [*page.evaluate("() => window.__violations"), *_console[page]]


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions and console errors of the page (HTTP error statuses aside)."""
    return list(_errors[page])


def send(page: Page, text: str) -> float:
    """Type ``text`` (new lines with Shift+Enter), press Enter; return seconds until the reply."""
    replies = page.locator("li.message.assistant")
    before = replies.count()
    box = page.locator("#input")
    box.click()
    for i, line in enumerate(text.split("\n")):
        if i:
            page.keyboard.press("Shift+Enter")
        page.keyboard.insert_text(line)
    started = time.perf_counter()
    page.keyboard.press("Enter")
    expect(replies).to_have_count(before + 1)
    elapsed = time.perf_counter() - started
    # innerText: a reply is Markdown, its line breaks are <br> elements.
    expect(replies.last.locator(".body")).to_have_text("Echo: " + text, use_inner_text=True)
    expect(page.locator("#send")).to_be_enabled()
    return elapsed


def bodies(page: Page) -> list[str]:
    return page.locator("li.message .body").all_inner_texts()


def test_chat_xss_reload_logout(server: BackgroundServer, page: Page, tmp_path: Path) -> None:
    response = page.goto(server.url + "/")
    assert response is not None and response.headers["content-security-policy"] == CSP
    register(page, server.url, "webuser")

    timings = [send(page, payload) for payload in PAYLOADS]
    print(f"\n[web] Enter to reply: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    # Shift+Enter made a new line inside the message instead of sending it.
    send(page, "first line\nsecond line")

    expected = [text for payload in [*PAYLOADS, "first line\nsecond line"]
                for text in (payload, "Echo: " + payload)]
    assert bodies(page) == expected
    assert page.locator("#messages img, #messages script").count() == 0
    assert page.evaluate("() => window.pwned") is None
    assert violations(page) == []
    screenshot(page, "web.png", tmp_path)
    page.set_viewport_size({"width": 390, "height": 760})
    screenshot(page, "web-phone.png", tmp_path)

    # A reload keeps the session (cookie) and fetches a fresh CSRF token from /api/session:
    # the history is back, and sending (a state change) still passes the CSRF check.
    page.reload()
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("li.message")).to_have_count(len(expected))
    assert bodies(page) == expected
    send(page, "after the reload")
    assert page.evaluate("() => window.pwned") is None

    page.click("#logout")
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#chat")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Logged out.")
    page.reload()  # the server revoked the session: still logged out
    expect(page.locator("#auth")).to_be_visible()
    assert violations(page) == []

    # The listener works: an inline script that our page would never add is reported.
    page.evaluate("""() => { const s = document.createElement("script");
                     s.textContent = "window.pwned = 1"; document.body.append(s); }""")
    for _ in range(100):  # the event is dispatched asynchronously
        if violations(page):
            break
        page.wait_for_timeout(50)
    assert any("script-src" in v for v in violations(page))
    assert page.evaluate("() => window.pwned") is None


def test_conversations_new_switch_delete(server: BackgroundServer, page: Page) -> None:
    register(page, server.url, "switcher")
    send(page, "first conversation")
    page.click("#new-conversation")
    expect(page.locator("li.message")).to_have_count(0)
    send(page, "second conversation")
    items = page.locator("button.conversation")
    expect(items).to_have_text(["second conversation", "first conversation"])

    items.nth(1).click()
    expect(page.locator("#thread-title")).to_have_text("first conversation")
    expect(page.locator("li.message .body")).to_have_text(
        ["first conversation", "Echo: first conversation"])

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-conversation")
    expect(items).to_have_text(["second conversation"])
    expect(page.locator("li.message .body").first).to_have_text("second conversation")




def test_errors_are_readable_and_recoverable(server: BackgroundServer, app: Flask,
                                             page: Page) -> None:
    page.goto(server.url + "/")
    page.fill("#username", "nobody")
    page.fill("#password", "wrong password")
    page.click("#login")
    expect(page.locator("#notice")).to_have_text("Wrong username or password.")
    expect(page.locator("#login")).to_be_enabled()

    register(page, server.url, "unlucky")
    send(page, "hello")

    backend = Flaky("down")
    app.extensions["securechat.responder"] = backend
    page.fill("#input", "are you there?")
    page.press("#input", "Enter")
    expect(page.locator("#notice")).to_have_text(
        "The server could not answer: The AI backend cannot be reached. (HTTP 503). Try again.")
    expect(page.locator("#input")).to_be_enabled()
    # The server stored the message before asking the backend: it stays on screen, is not
    # put back in the input (sending it again would store it twice), and "Try again" asks
    # for the missing reply.
    expect(page.locator("#input")).to_have_value("")
    expect(page.locator("li.message.user .body").last).to_have_text("are you there?")
    backend.mode = "ok"
    page.click("#retry")
    expect(page.locator("li.message.assistant .body").last).to_have_text(
        "Mended: are you there?")
    expect(page.locator("#retry")).to_be_hidden()
    expect(page.locator("#notice")).to_be_hidden()

    backend.mode = "midway"  # the stream breaks after its first chunk
    page.fill("#input", "tell me more")
    page.press("#input", "Enter")
    expect(page.locator("#notice")).to_contain_text("took too long")
    cut = page.locator("li.message.assistant").last
    expect(cut.locator(".who")).to_have_text("Assistant · cut short")
    expect(cut.locator(".body")).to_have_text("Partial")
    expect(page.locator("#retry")).to_be_visible()

    server.stop()
    page.click("#retry")
    expect(page.locator("#notice")).to_contain_text("Cannot reach the server")
    expect(page.locator("#retry")).to_be_visible()
    page.fill("#input", "still there?")
    page.press("#input", "Enter")
    expect(page.locator("#notice")).to_contain_text("Cannot reach the server")
    expect(page.locator("#input")).to_be_enabled()
    expect(page.locator("#input")).to_have_value("still there?")  # not stored: given back
    expect(page.locator("li.message.user .body").last).to_have_text("tell me more")
    assert violations(page) == []


def test_usable_at_phone_width(server: BackgroundServer, page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 700})
    register(page, server.url, "phoneuser")
    send(page, "a long message " * 20)
    # Nothing wider than the screen, and the input and Send button are on it.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    for selector in ("#input", "#send", "#logout", "#new-conversation"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
        assert box["y"] + box["height"] <= 700, selector


def test_reply_text_is_never_parsed_as_html(server: BackgroundServer, page: Page) -> None:
    # A nasty title too: titles are user text shown in the conversation list.
    register(page, server.url, "titles")
    payload = '"><svg onload="window.pwned=1"><b>bold?</b>'
    send(page, payload)
    expect(page.locator("button.conversation")).to_have_text([payload[:60]])
    expect(page.locator("#thread-title")).to_have_text(payload[:60])
    assert page.locator("#chat svg, #chat b").count() == 0
    assert page.evaluate("() => window.pwned") is None
    assert violations(page) == []


def test_missing_chromium_skips_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(browser_helpers, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser_helpers.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        browser_helpers.require_chromium()


# --- replies in Markdown -----------------------------------------------------------------

# Typed as messages; the echo backend sends each back as "Echo: <message>", a reply the page
# renders as Markdown. A fence must start its own line, hence the words before some.
MARKDOWN_PAYLOADS = [
    *PAYLOADS,
    "[x](javascript:window.pwned=1)",
    "![x](x onerror=window.pwned=1)",
    'code:\n```html\n<img src=x onerror="window.pwned=1">\n```',
    "`<img src=x onerror=window.pwned=1>` and `<script>window.pwned=1</script>`",
    "***<b>x</b>*** ***x*** **a *b* c** *a **b** c* ***a** b* ***a* b**",
    "fence:\n```\ncode\n```",
    "empty fence:\n```\n```",
    '<svg onload="window.pwned=1"><circle r=9></circle></svg>',
    '<a href="javascript:window.pwned=1">click</a>',
    "javascript:window.pwned=1",
    "\u202e<img src=x onerror=window.pwned=1>\u202c \u200b*x\u200b* \u2066*RTL*\u2069 \ufeff",
    "quote:\n> <iframe src=javascript:window.pwned=1></iframe>\n"
    "- <style>*{display:none}</style>\n- **<u>x</u>**",
    "# <h1 onclick=window.pwned=1>heading</h1>",
    "&lt;script&gt;window.pwned=1&lt;/script&gt; &amp;amp; &#60;b&#62;",
    "unclosed:\n```\n</code></pre><img src=x onerror=window.pwned=1>",
    '<math><mi xlink:href="javascript:window.pwned=1">x</mi></math>',
    "<!-- comment --><![CDATA[x]]><?pi?> <base href=//evil/> <meta http-equiv=refresh>",
]
# What may exist inside a reply's body: the renderer's tags, and each code block's wrapper
# and Copy button (with exactly these attributes).
WRAPPERS = {"div": {"class": "code-block"}, "button": {"class": "copy", "type": "button"}}

# Every element in the message list with its attributes, and where it is.
LIST_ELEMENTS_JS = """
() => [...document.querySelectorAll("#messages *")].map((el) => ({
  tag: el.localName,
  attrs: Object.fromEntries([...el.attributes].map((a) => [a.name, a.value])),
  in: el.closest(".body.markdown") && !el.matches(".body") ? "markdown"
    : el.closest(".body.text") && !el.matches(".body") ? "text" : "frame",
}))
"""


def send_and_read(page: Page, text: str) -> list[Any]:
    """Send ``text``; return the tree of the finished reply's body (Copy buttons left out)."""
    replies = page.locator("li.message.assistant")
    before = replies.count()
    page.locator("#input").click()
    for i, line in enumerate(text.split("\n")):
        if i:
            page.keyboard.press("Shift+Enter")
        page.keyboard.insert_text(line)
    page.keyboard.press("Enter")
    expect(replies).to_have_count(before + 1)
    expect(page.locator("#send")).to_be_enabled()  # the reply is complete
    tree = replies.last.locator(".body").evaluate(DOM_TREE_JS)
    return _without_copy_buttons(tree)


def _without_copy_buttons(tree: list[Any]) -> list[Any]:
    out: list[Any] = []
    for node in tree:
        if isinstance(node, list) and node[:2] == ["div", ["button", "Copy"]]:
            (node,) = node[2:]  # the <pre> inside
        out.append(node if isinstance(node, str) else [node[0], *_without_copy_buttons(node[1:])])
    return out


def test_reply_markdown_xss_corpus(server: BackgroundServer, page: Page) -> None:
    register(page, server.url, "mdxss")
    for payload in MARKDOWN_PAYLOADS:
        # The page shows the reply as the Python renderer (well-formed, tested) builds it.
        assert send_and_read(page, payload) == html_tree(render_markdown("Echo: " + payload))
        # ... and the person's own message exactly as typed, as text.
        mine = page.locator("li.message.user .body").last
        assert mine.evaluate("(el) => [el.textContent, el.children.length]") == [payload, 0]
    # Nothing that looked like markup became markup: the words are still there, as text.
    shown = page.locator("li.message.assistant .body").all_text_contents()
    assert len(shown) == len(MARKDOWN_PAYLOADS)
    for payload, text in zip(MARKDOWN_PAYLOADS, shown, strict=True):
        for word in ("<img", "<script", "<svg", "<a href", "javascript:", "onerror=",
                     "onload=", "<iframe", "<style", "<math", "<!--", "<base"):
            assert (word in payload) == (word in text), (word, payload)

    assert page.evaluate("() => window.pwned") is None
    elements = page.evaluate(LIST_ELEMENTS_JS)
    allowed = set(TAGS) | set(WRAPPERS)
    for el in elements:
        names = set(el["attrs"])
        assert not {n for n in names if n in ("href", "src", "style", "srcdoc", "xlink:href")
                    or n.startswith("on")}, el
        if el["in"] == "text":
            raise AssertionError(f"an element inside a person's message: {el}")
        if el["in"] == "markdown":
            assert el["tag"] in allowed, el
            assert el["attrs"] == WRAPPERS.get(el["tag"], {}), el
        elif el["tag"] == "button":  # the message's own actions: Copy, Edit, Regenerate
            assert names <= {"class", "type", "aria-label", "hidden"}, el
            assert el["attrs"]["type"] == "button", el
        else:  # the page's own frame of each message (a stored one carries its id)
            assert el["tag"] in ("li", "span", "div") and {"class"} <= names <= {
                "class", "data-id"}, el
    assert {el["tag"] for el in elements if el["in"] == "markdown"} >= {
        "p", "strong", "em", "code", "pre", "ul", "li", "blockquote", "div", "button"}
    assert violations(page) == []
    assert page_errors(page) == []


def test_page_renderer_agrees_with_python(server: BackgroundServer, page: Page) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#auth")).to_be_visible()
    # Random soups of the syntax, letters (one astral), spaces (one of them Unicode's).
    pieces = ["*", "**", "***", "`", "``", "```", "\n", " ", "\t", "a", "b c", "_", "#", "# ",
              "> ", "- ", "1. ", "2)", "<b>", "&amp;", "\u00e9", "\U0001d400", "\u00a0",
              "\u3000", "\r\n", "  "]
    rng = random.Random(20240611)  # noqa: S311 (test data, fixed so a failure replays)
    soups = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(400)]
    sources = [case["source"] for case in CASES] + soups
    trees = _page_trees(page, sources)
    for case, tree in zip(CASES, trees[:len(CASES)], strict=True):
        assert tree == case["expected"], case["name"]
    for source, tree in zip(soups, trees[len(CASES):], strict=True):
        assert tree == html_tree(render_markdown(source)), repr(source)
    assert violations(page) == [] and page_errors(page) == []


def _page_trees(page: Page, sources: Sequence[str]) -> list[Any]:
    """The trees of the page's renderer (markdown.js, imported as the page imports it)."""
    return page.evaluate(f"""async (sources) => {{
        {DOM_TREE_FUNCTION}
        const {{ renderMarkdown }} = await import("/assets/markdown.js");
        return sources.map((s) => domTree(renderMarkdown(s)));
    }}""", list(sources))


def test_reply_markdown_renders_and_copies(server: BackgroundServer, page: Page,
                                           tmp_path: Path) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    register(page, server.url, "mdshow")
    code = "print('<hi>')\n    return a * b"
    message = ("Some **bold**, *italic*, ***both*** and `a < b`:\n- one\n- *two*\n"
               f"1. first\n> quoted\n# Title\n```python\n{code}\n```\nafter")
    page.fill("#input", message)
    page.press("#input", "Enter")
    reply = page.locator("li.message.assistant .body").last
    expect(reply.locator("p").last).to_have_text("after")
    expect(page.locator("#send")).to_be_enabled()
    expect(reply.locator("p > strong").first).to_have_text("bold")
    expect(reply.locator("p > em").first).to_have_text("italic")
    expect(reply.locator("em > strong")).to_have_text("both")
    expect(reply.locator("p > code")).to_have_text("a < b")
    expect(reply.locator("ul > li")).to_have_text(["one", "two"])
    expect(reply.locator("ul > li > em")).to_have_text("two")
    expect(reply.locator("ol > li")).to_have_text(["first"])
    expect(reply.locator("blockquote")).to_have_text("quoted")
    expect(reply.locator("p > strong", has_text="Title")).to_have_count(1)
    pre = reply.locator(".code-block pre")
    assert pre.evaluate("(el) => el.textContent") == code
    # The person's own message stays as typed: text, no markup.
    mine = page.locator("li.message.user .body").last
    assert mine.evaluate("(el) => [el.textContent, el.children.length]") == [message, 0]
    screenshot(page, "web-markdown.png", tmp_path)

    copy = reply.locator("button.copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == code
    expect(copy).to_have_text("Copy")  # the label comes back
    assert violations(page) == [] and page_errors(page) == []


def test_long_unclosed_emphasis_reply_renders(server: BackgroundServer, page: Page) -> None:
    register(page, server.url, "mdlong")
    text = "*a " * 10_000  # 30 000 characters that never close
    timings = page.evaluate("""async (units) => {
        const { renderMarkdown } = await import("/assets/markdown.js");
        return units.map((unit) => {
          const text = unit.repeat(Math.floor(30000 / unit.length));
          const started = performance.now();
          renderMarkdown(text);
          return [unit, performance.now() - started];
        });
    }""", ["*a ", "**a ", "**a *b ", "***a ", "*a*a ", "`a ", "*a* **b** ", "x\n", "- *a "])
    print("\n[web] renderMarkdown, 30 000 characters: " +
          ", ".join(f"{unit.strip()!r} {ms:.1f} ms" for unit, ms in timings))
    send(page, text)
    body = page.locator("li.message.assistant .body").last
    assert body.evaluate(DOM_TREE_JS) == [["p", "Echo: " + text]]  # all of it, as text


def test_focus_is_in_the_message_box(server: BackgroundServer, page: Page) -> None:
    def focused() -> str:
        return str(page.evaluate("() => document.activeElement && document.activeElement.id"))

    register(page, server.url, "focuser")
    expect(page.locator("#input")).to_be_focused()
    send(page, "first")
    page.click("#new-conversation")
    send(page, "second")
    page.locator("button.conversation").nth(1).click()
    expect(page.locator("#thread-title")).to_have_text("first")
    expect(page.locator("#input")).to_be_focused()
    page.locator("button.conversation").nth(0).click()
    expect(page.locator("#thread-title")).to_have_text("second")
    expect(page.locator("#input")).to_be_focused()

    page.click("#logout")
    expect(page.locator("#auth")).to_be_visible()
    assert focused() == "username"
    page.fill("#username", "focuser")
    page.fill("#password", PASSWORD)
    page.click("#login")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#input")).to_be_focused()
    page.reload()  # the session is still there: straight to the chat, cursor in the box
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#input")).to_be_focused()


class Gate:
    """A responder that answers only once ``open`` is set (a slow AI backend)."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def reply(self, history: Sequence[Turn]) -> str:
        self.open.wait(60)
        return "Slow: " + history[-1]["content"]

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        self.open.wait(60)
        yield "Slow: "
        yield history[-1]["content"]


def test_typing_while_a_reply_is_pending_is_kept(server: BackgroundServer, app: Flask,
                                                 page: Page) -> None:
    register(page, server.url, "patient")
    gate = Gate()
    app.extensions["securechat.responder"] = gate
    try:
        page.fill("#input", "first")
        page.press("#input", "Enter")
        expect(page.locator("#thinking")).to_be_visible()
        expect(page.locator("#send")).to_be_disabled()
        expect(page.locator("#input")).to_be_enabled()
        expect(page.locator("#input")).to_be_focused()
        page.keyboard.type("typed while waiting")
        page.keyboard.press("Enter")  # does not send while the reply is pending...
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("and more")
        expect(page.locator("#input")).to_have_value("typed while waiting\nand more")
        expect(page.locator("li.message.user")).to_have_count(1)
    finally:
        gate.open.set()
    expect(page.locator("li.message.assistant .body")).to_have_text(["Slow: first"])
    expect(page.locator("#send")).to_be_enabled()
    # ... and what was typed meanwhile is still there when the reply lands.
    expect(page.locator("#input")).to_have_value("typed while waiting\nand more")
    expect(page.locator("#input")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("li.message.user .body")).to_have_text(
        ["first", "typed while waiting\nand more"])
    expect(page.locator("li.message.assistant .body").last).to_have_text(
        "Slow: typed while waiting\nand more", use_inner_text=True)
    expect(page.locator("#input")).to_have_value("")
    assert violations(page) == [] and page_errors(page) == []


def test_auth_form_shows_and_applies_the_rules(server: BackgroundServer, page: Page) -> None:
    page.goto(server.url + "/")
    username, password = page.locator("#username"), page.locator("#password")
    expect(username).to_have_accessible_description(re.compile("3–32 characters"))
    expect(password).to_have_accessible_description(f"{MIN_PASSWORD}–{MAX_PASSWORD} characters.")
    expect(page.locator("#username-rules")).to_be_visible()
    expect(page.locator("#password-rules")).to_be_visible()
    # The browser's own check of the name agrees with the server's rule, name by name.
    for name in NAMES:
        username.fill(name)
        valid = username.evaluate("(el) => el.validity.valid")
        assert valid == bool(USERNAME_RE.fullmatch(name)), name
    # A password longer than the server takes is not cut short: the server says why.
    username.fill("longpass")
    password.fill("x" * (MAX_PASSWORD + 1))
    assert len(password.input_value()) == MAX_PASSWORD + 1
    page.click("#register")
    expect(page.locator("#notice")).to_have_text(
        f"Passwords are at most {MAX_PASSWORD} characters.")
    assert violations(page) == [] and page_errors(page) == []


def test_rate_limit_says_how_long_to_wait(page: Page, tmp_path: Path) -> None:
    app = create_app({**FAST, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "2 per minute"},
                     instance_path=tmp_path / "instance")
    with BackgroundServer(app) as server:
        page.goto(server.url + "/")
        page.fill("#username", "nobody")
        for _ in range(2):
            page.fill("#password", "wrong password")  # the page empties it after each try
            with page.expect_response(lambda r: r.url.endswith("/api/login")) as answer:
                page.click("#login")
            assert answer.value.status == 401
            expect(page.locator("#notice")).to_have_text("Wrong username or password.")
            expect(page.locator("#login")).to_be_enabled()
        page.fill("#password", "wrong password")
        with page.expect_response(lambda r: r.url.endswith("/api/login")) as answer:
            page.click("#login")
        assert answer.value.status == 429
        waited = int(answer.value.headers["retry-after"])
        assert 0 < waited <= 60
        wait = "1 second" if waited == 1 else f"{waited} seconds"
        expect(page.locator("#notice")).to_have_text(
            f"Too many requests; slow down. Try again in {wait}.")
