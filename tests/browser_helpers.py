"""Shared pieces of the browser tests: Debian's Chromium driven by Playwright (never a download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from flask import Flask
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from securechat import BackgroundServer, create_app
from securechat.recovery import parse_code
from tests.helpers import FAST, PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Set to a folder (e.g. docs) to keep the screenshots the tests take; the README's come from it.
SCREENSHOTS_ENV = "UI_SCREENSHOTS_DIR"
# Generous: CI machines are slow and JupyterLab loads a lot of JavaScript.
SLOW_MS = 120_000


def require_chromium() -> None:
    """Skip without Chromium on a developer's machine; in CI (``CI`` set) a missing one fails."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards."""
    require_chromium()
    # expect() has its own 5 s default, too short for a cold JupyterLab on a busy CI machine.
    expect.set_options(timeout=SLOW_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(target: Page | Locator, name: str, tmp_path: Path) -> Path:
    """Save a PNG in ``tmp_path``, and in ``$UI_SCREENSHOTS_DIR`` when that is set."""
    path = tmp_path / name
    target.screenshot(path=str(path))
    keep = os.environ.get(SCREENSHOTS_ENV)
    if keep:
        # Relative to the repository: the tests themselves run in a temporary folder.
        folder = Path(__file__).resolve().parent.parent / keep
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    return path


def take_recovery_code(page: Page) -> str:
    """Read the recovery code the page shows once, say it is written down, and close it."""
    dialog = page.locator("#code-dialog")
    expect(dialog).to_be_visible()
    code = page.locator("#code-value").inner_text()
    parse_code(code)  # a well-formed code, check character included
    expect(page.locator("#code-done")).to_be_disabled()  # not before it is written down
    page.check("#code-saved")
    page.click("#code-done")
    expect(dialog).to_be_hidden()
    expect(page.locator("#code-value")).to_have_text("")  # gone from the page
    return code


def register(page: Page, url: str, username: str, password: str = PASSWORD) -> str:
    """Register ``username`` through the page's form; return the recovery code it showed."""
    page.goto(url + "/")
    expect(page.locator("#auth")).to_be_visible()
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#register")
    code = take_recovery_code(page)
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#who")).to_have_text(username)
    return code


# Runs before the page's own scripts (injected by the browser driver, so the CSP does
# not apply to it): it records every CSP violation the page causes.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class WatchedPage:
    """A page in a context of its own that records CSP violations and page errors."""

    def __init__(self, browser: Browser, **context_options: Any) -> None:
        self.context: BrowserContext = browser.new_context(
            viewport={"width": 1100, "height": 720}, **context_options)
        self.context.add_init_script(script=RECORD_VIOLATIONS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        # An HTTP error status (a 401 or 400 the test provokes) is logged as a failed
        # resource load; anything else on the error console, or any CSP complaint, is a bug.
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.errors.append(text)
        elif message.type == "error" and not text.startswith("Failed to load resource"):
            self.errors.append(text)

    def problems(self) -> list[str]:
        """CSP violations, CSP complaints, uncaught exceptions and console errors so far."""
        return [*self.page.evaluate("() => window.__violations"), *self.errors]

    def close(self) -> None:
        """Close the context (and its page)."""
        self.context.close()


@contextmanager
def watched_page(browser: Browser, **context_options: Any) -> Iterator[WatchedPage]:
    """A :class:`WatchedPage`, closed afterwards."""
    watched = WatchedPage(browser, **context_options)
    try:
        yield watched
    finally:
        watched.close()


class Site(NamedTuple):
    """The app a module's browser tests share, served on loopback."""

    app: Flask
    server: BackgroundServer
    url: str


@contextmanager
def served_site(instance: Path) -> Iterator[Site]:
    """A test app (FAST settings) on ``instance``, served for the duration."""
    app = create_app(dict(FAST), instance_path=instance)
    with BackgroundServer(app) as server:
        yield Site(app, server, server.url)
    app.extensions["securechat.db"].close()
