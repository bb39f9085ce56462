"""The web page at / in a real Chromium: text stays text, the CSP holds, state survives reloads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import pytest
from flask import Flask
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from securechat import BackgroundServer
from securechat.app import CSP
from tests import browser_helpers
from tests.browser_helpers import chromium, screenshot
from tests.fake_backend import Flaky

STATIC = Path(__file__).resolve().parents[1] / "securechat" / "static"
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


def test_script_never_builds_html_from_strings() -> None:
    source = (STATIC / "app.js").read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "setTimeout('"):
        assert sink not in source, sink
    assert "textContent" in source and "X-CSRF-Token" in source


def test_page_and_assets_are_served_with_the_csp(app: Flask) -> None:
    web = app.test_client()
    for path, kind in [("/", "text/html"), ("/assets/app.js", "text/javascript"),
                       ("/assets/app.css", "text/css"), ("/favicon.ico", "image/svg+xml")]:
        response = web.get(path)
        response.close()  # a file response keeps its file open until closed
        assert response.status_code == 200, path
        assert response.mimetype == kind
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- in the browser ------------------------------------------------------------------

@pytest.fixture
def browser() -> Iterator[Browser]:
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
    yield page
    context.close()


_console: WeakKeyDictionary[Page, list[str]] = WeakKeyDictionary()


def violations(page: Page) -> list[Any]:
    """CSP violations seen by the page's listener plus CSP complaints on its console."""
    return [*page.evaluate("() => window.__violations"), *_console[page]]


def register(page: Page, url: str, username: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#auth")).to_be_visible()
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#register")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#who")).to_have_text(username)


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
    expect(replies.last.locator(".body")).to_have_text("Echo: " + text)
    expect(box).to_be_enabled()
    return elapsed


def bodies(page: Page) -> list[str]:
    return page.locator("li.message .body").all_text_contents()


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
    expect(page.locator("#notice")).to_have_text("Logged out.")
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
