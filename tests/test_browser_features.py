"""The web page's chat features in a real Chromium (issue 14), and its accessibility (axe-core).

Rename, star, paging, stop, regenerate, edit, copy, temporary chats, search and
export/import, each against a real server. One browser and one served app for the module
(each test has its own browser context and user) keep the time down.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from securechat import ChatClient
from securechat.backends import Turn
from tests.browser_helpers import (
    Site,
    WatchedPage,
    chromium,
    register,
    screenshot,
    served_site,
    take_recovery_code,
    watched_page,
)
from tests.fake_backend import Flaky, wait_for
from tests.helpers import PASSWORD, unique_name

VENDOR = Path(__file__).resolve().parent / "vendor" / "axe-core"


class Gated:
    """A responder that sends its first words, then waits for ``go`` (a slow AI)."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def reply(self, history: Sequence[Turn]) -> str:
        self.go.wait(60)
        return "Partial answer" + " more" * 200

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        yield "Partial answer"
        self.go.wait(60)
        # A server learns that the client left only when a write fails, which is a write
        # or two after the connection closed: a long reply goes on a while, as a model's does.
        for _ in range(200):
            time.sleep(0.01)
            yield " more"


class Silent:
    """A responder that says nothing until ``go`` is set, then one word."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def reply(self, history: Sequence[Turn]) -> str:
        self.go.wait(60)
        return "late " * 200

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        self.go.wait(60)
        for _ in range(200):  # long enough for the server to notice the page left
            time.sleep(0.01)
            yield "late "


class Counting:
    """A responder whose every reply is new: ``Reply N (T turns): <last message>``."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def reply(self, history: Sequence[Turn]) -> str:
        with self.lock:
            self.calls += 1
            return f"Reply {self.calls} ({len(history)} turns): {history[-1]['content']}"

    def stream(self, history: Sequence[Turn]) -> Iterator[str]:
        text = self.reply(history)
        yield text[:6]
        yield text[6:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with served_site(tmp_path_factory.mktemp("web") / "instance") as served:
        yield served


@pytest.fixture
def responder(site: Site) -> Iterator[Callable[[Any], None]]:
    """Swap the app's AI backend for one test; the echo responder comes back afterwards."""
    original = site.app.extensions["securechat.responder"]

    def use(backend: Any) -> None:
        site.app.extensions["securechat.responder"] = backend

    yield use
    site.app.extensions["securechat.responder"] = original


@pytest.fixture
def web(browser: Browser) -> Iterator[WatchedPage]:
    with watched_page(browser) as watched:
        yield watched


@pytest.fixture
def user(site: Site, web: WatchedPage) -> Iterator[tuple[str, ChatClient]]:
    """A user registered through the page, and a ChatClient logged in as them."""
    name = unique_name("feature")
    register(web.page, site.url, name)
    client = ChatClient(site.url, timeout=30)
    client.login(name, PASSWORD)
    yield name, client
    client.close()


def send(page: Page, text: str) -> None:
    replies = page.locator("li.message.assistant")
    before = replies.count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(replies).to_have_count(before + 1)
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#send")).to_be_enabled()


def texts(page: Page) -> list[str]:
    return page.locator("li.message .body").all_inner_texts()


# --- conversations: rename, star, paging ----------------------------------------------


def test_rename_star_and_load_more(site: Site, web: WatchedPage,
                                   user: tuple[str, ChatClient]) -> None:
    page = web.page
    _, client = user
    for i in range(55):
        client.new_conversation(f"topic {i}")
    page.reload()
    items = page.locator("button.conversation")
    expect(items).to_have_count(50)  # one page
    more = page.locator("#conversations-more")
    more.click()
    expect(items).to_have_count(55)
    expect(more).to_be_hidden()

    items.filter(has_text=re.compile(r"^topic 3$")).click()
    expect(page.locator("#thread-title")).to_have_text("topic 3")
    # Rename inline: Esc leaves it as it was, Enter saves. Titles stay text.
    page.click("#rename")
    box = page.locator("#rename-input")
    expect(box).to_be_focused()
    expect(box).to_have_value("topic 3")
    box.fill("never saved")
    box.press("Escape")
    expect(page.locator("#thread-title")).to_have_text("topic 3")
    expect(page.locator("#rename")).to_be_focused()
    page.click("#rename")
    title = "Renamed <b>plans</b>"
    box.fill(title)
    box.press("Enter")
    expect(page.locator("#thread-title")).to_have_text(title)
    expect(page.locator("button.conversation[aria-current=true]")).to_have_text(title)
    assert page.locator("#chat b").count() == 0
    assert title in [c["title"] for c in client.conversations()]

    # Star: it moves to the top, marked, and stays there after a reload.
    star = page.locator("#star")
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    expect(star).to_have_attribute("aria-pressed", "true")
    expect(items.first).to_have_text(title)
    expect(page.locator("#conversation-list li").first.locator(".starred-mark")).to_have_count(1)
    page.reload()
    expect(items.first).to_have_text(title)
    items.first.click()
    expect(page.locator("#star")).to_have_attribute("aria-pressed", "true")
    page.click("#star")
    expect(page.locator("#star")).to_have_attribute("aria-pressed", "false")
    expect(page.locator(".starred-mark")).to_have_count(0)
    assert not [c for c in client.conversations() if c["starred"]]
    assert web.problems() == []


# --- replies: stop, regenerate, edit, copy ---------------------------------------------


def test_stop_keeps_the_partial_reply(site: Site, web: WatchedPage,
                                      user: tuple[str, ChatClient],
                                      responder: Callable[[Any], None]) -> None:
    page = web.page
    _, client = user
    for how in ("Escape", "button"):
        slow = Gated()
        responder(slow)
        page.fill("#input", f"tell me ({how})")
        page.press("#input", "Enter")
        reply = page.locator("li.message.assistant").last
        expect(reply.locator(".body")).to_have_text("Partial answer")
        expect(page.locator("#stop")).to_be_visible()
        expect(page.locator("#send")).to_be_hidden()
        expect(page.locator("#messages")).to_have_attribute("aria-busy", "true")
        if how == "Escape":
            page.keyboard.press("Escape")
        else:
            page.click("#stop")
        cut = page.locator("li.message.assistant").last
        expect(cut.locator(".who")).to_have_text("Assistant · cut short")
        expect(cut.locator(".body")).to_have_text("Partial answer")
        expect(page.locator("#status")).to_have_text(
            "Stopped. The reply so far is kept, marked cut short.")
        expect(page.locator("#stop")).to_be_hidden()
        expect(page.locator("#send")).to_be_enabled()
        expect(page.locator("#messages")).to_have_attribute("aria-busy", "false")
        expect(page.locator("#input")).to_be_focused()
        slow.go.set()  # the server notices the closed stream at its next chunk
        stored = wait_for(lambda: _last_if_incomplete(client))
        # What reached the page, and perhaps a word or two more that the server wrote
        # before it noticed the page had stopped listening.
        assert stored["content"].startswith("Partial answer")
        assert len(stored["content"]) < len("Partial answer" + " more" * 200)

    page.reload()  # the server kept both, marked
    expect(page.locator("li.message.assistant .who")).to_have_text(
        ["Assistant · cut short", "Assistant · cut short"])

    # Stopped before a word arrived: the message stays (it is stored), and Try again asks
    # for its reply.
    silent = Silent()
    responder(silent)
    page.fill("#input", "anyone?")
    page.press("#input", "Enter")
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("Stopped before the reply began.")
    expect(page.locator("li.message.user .body").last).to_have_text("anyone?")
    expect(page.locator("li.message")).to_have_count(5)
    silent.go.set()
    wait_for(lambda: _last_if_incomplete(client))  # what the backend said late is kept
    responder(Counting())
    page.click("#retry")
    # The page shows what the server holds: the late words, cut short, then the answer.
    expect(page.locator("li.message .body").last).to_have_text(
        re.compile(r"^Reply 1 \(\d+ turns\): anyone\?$"))
    expect(page.locator("li.message.assistant .who").nth(-2)).to_have_text(
        "Assistant · cut short")
    expect(page.locator("#retry")).to_be_hidden()
    assert web.problems() == []


def _last_if_incomplete(client: ChatClient) -> dict[str, Any] | None:
    """The newest conversation's last message once it is stored marked incomplete."""
    last: dict[str, Any] = client.history(client.conversations()[0]["id"])[-1]
    return last if last.get("incomplete") else None


def test_regenerate_edit_and_copy(site: Site, web: WatchedPage, user: tuple[str, ChatClient],
                                  responder: Callable[[Any], None]) -> None:
    page = web.page
    _, client = user
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    responder(Counting())
    send(page, "first question")
    send(page, "second")
    assert texts(page) == ["first question", "Reply 1 (1 turns): first question",
                           "second", "Reply 2 (3 turns): second"]
    # Edit is offered on your last message only; Regenerate on the reply that ends the thread.
    expect(page.locator("li.message button.edit:visible")).to_have_count(1)
    expect(page.locator("li.message.user").last.locator("button.edit")).to_be_visible()
    expect(page.locator("li.message button.regenerate:visible")).to_have_count(1)
    expect(page.locator("li.message.assistant").last.locator("button.regenerate")).to_be_visible()

    page.locator("li.message.assistant").last.locator("button.regenerate").click()
    expect(page.locator("li.message .body").last).to_have_text("Reply 3 (3 turns): second")
    expect(page.locator("li.message")).to_have_count(4)
    conversation = client.conversations()[0]["id"]
    assert [m["content"] for m in client.history(conversation)] == texts(page)

    page.locator("li.message.user").last.locator("button.edit").click()
    expect(page.locator("#editing")).to_be_visible()
    expect(page.locator("#input")).to_have_value("second")
    expect(page.locator("#input")).to_be_focused()
    page.keyboard.press("Escape")  # cancels the edit
    expect(page.locator("#editing")).to_be_hidden()
    expect(page.locator("#input")).to_have_value("")
    page.locator("li.message.user").last.locator("button.edit").click()
    page.fill("#input", "second, edited")
    page.press("#input", "Enter")
    expect(page.locator("li.message .body").last).to_have_text(
        "Reply 4 (3 turns): second, edited")
    expect(page.locator("#editing")).to_be_hidden()
    expected = ["first question", "Reply 1 (1 turns): first question",
                "second, edited", "Reply 4 (3 turns): second, edited"]
    assert texts(page) == expected
    assert [m["content"] for m in client.history(conversation)] == expected

    # Copy a message of yours, and a reply.
    mine = page.locator("li.message.user").first.locator("button.message-copy")
    mine.click()
    expect(mine).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "first question"
    theirs = page.locator("li.message.assistant").last.locator("button.message-copy")
    theirs.click()
    expect(theirs).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == expected[-1]
    expect(mine).to_have_text("Copy")
    assert web.problems() == []


def test_temporary_chat_is_held_by_the_page_only(site: Site, web: WatchedPage,
                                                 user: tuple[str, ChatClient],
                                                 responder: Callable[[Any], None]) -> None:
    page = web.page
    _, client = user
    responder(Counting())
    send(page, "a stored one")
    page.check("#ghost-toggle")
    expect(page.locator("#ghost-note")).to_be_visible()
    expect(page.locator("#thread-title")).to_have_text("Temporary chat")
    expect(page.locator("li.message")).to_have_count(0)
    for control in ("#star", "#rename", "#delete-conversation"):
        expect(page.locator(control)).to_be_hidden()

    send(page, "secret one")
    send(page, "secret two")  # the page sends the history it holds
    assert texts(page) == ["secret one", "Reply 2 (1 turns): secret one",
                           "secret two", "Reply 3 (3 turns): secret two"]
    page.locator("li.message.assistant").last.locator("button.regenerate").click()
    expect(page.locator("li.message .body").last).to_have_text("Reply 4 (3 turns): secret two")
    page.locator("li.message.user").last.locator("button.edit").click()
    page.fill("#input", "secret three")
    page.press("#input", "Enter")
    expect(page.locator("li.message .body").last).to_have_text(
        "Reply 5 (3 turns): secret three")
    assert texts(page) == ["secret one", "Reply 2 (1 turns): secret one",
                           "secret three", "Reply 5 (3 turns): secret three"]

    # Nothing of it reached the server's storage.
    conversations = client.conversations()
    assert len(conversations) == 1
    assert [m["content"] for m in client.history(conversations[0]["id"])] == [
        "a stored one", "Reply 1 (1 turns): a stored one"]
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0

    # Leaving asks first (no: nothing changes), then the temporary chat is gone for good.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("button.conversation").first.click()
    expect(page.locator("#ghost-toggle")).to_be_checked()
    expect(page.locator("li.message")).to_have_count(4)
    page.once("dialog", lambda dialog: dialog.accept())
    page.uncheck("#ghost-toggle")
    expect(page.locator("#ghost-note")).to_be_hidden()
    expect(page.locator("li.message .body").first).to_have_text("a stored one")
    page.check("#ghost-toggle")
    expect(page.locator("li.message")).to_have_count(0)
    send(page, "fresh")
    expect(page.locator("li.message .body").last).to_have_text("Reply 6 (1 turns): fresh")

    # A backend failure keeps the turn in the page, and Try again asks for its reply.
    flaky = Flaky("down")
    responder(flaky)
    page.fill("#input", "are you there?")
    page.press("#input", "Enter")
    expect(page.locator("#notice")).to_contain_text("cannot be reached")
    expect(page.locator("li.message.user .body").last).to_have_text("are you there?")
    flaky.mode = "ok"
    page.click("#retry")
    expect(page.locator("li.message .body").last).to_have_text("Partial answer")
    responder(Counting())
    send(page, "and now?")  # the page's history holds every turn, the failed one's too
    expect(page.locator("li.message .body").last).to_have_text("Reply 1 (5 turns): and now?")
    assert len(client.conversations()) == 1
    assert web.problems() == []


# --- search, export and import ---------------------------------------------------------


def test_search_jumps_to_the_message(site: Site, web: WatchedPage,
                                     user: tuple[str, ChatClient]) -> None:
    page = web.page
    _, client = user
    travel = client.new_conversation("Travel <i>plans</i>")
    for text in ["which train goes to Lisbon?", "and back?"]:
        client.send(travel["id"], text)
    cooking = client.new_conversation("Cooking")
    client.send(cooking["id"], "how to bake bread")
    page.reload()
    expect(page.locator("#thread-title")).to_have_text("Cooking")

    page.fill("#search-input", "LISBON")
    page.press("#search-input", "Enter")
    hits = page.locator("#search-results button.search-hit")
    expect(hits.first).to_be_visible()
    expect(hits.first).to_be_focused()
    expect(page.locator("#search-results mark").first).to_have_text("Lisbon")
    expect(hits).to_have_count(2)  # the message and its echo, newest first
    expect(hits.locator(".hit-snippet")).to_have_text([
        "Assistant · Echo: which train goes to Lisbon?", "You · which train goes to Lisbon?"])
    hit = hits.filter(has_text="You · which train")
    expect(hit.locator(".hit-title")).to_have_text("Travel <i>plans</i>")  # text, not markup
    assert page.locator("#search-results i").count() == 0
    hit.click()
    expect(page.locator("#thread-title")).to_have_text("Travel <i>plans</i>")
    found = page.locator("li.message.found")
    expect(found).to_have_count(1)
    expect(found.locator(".body")).to_have_text("which train goes to Lisbon?")
    expect(found).to_be_focused()

    page.fill("#search-input", "no such words anywhere")
    page.press("#search-input", "Enter")
    expect(page.locator("#search-results li")).to_have_text(["Nothing found."])
    page.click("#search-clear")
    expect(page.locator("#search-area")).to_be_hidden()
    expect(page.locator("#search-input")).to_be_focused()
    assert web.problems() == []


def test_export_warns_then_downloads_and_import_adds(site: Site, web: WatchedPage,
                                                      user: tuple[str, ChatClient],
                                                      tmp_path: Path) -> None:
    page = web.page
    send(page, "export me, **bold**")
    page.click("#account-toggle")
    # Said before any download: a plain export is readable by whoever has the file.
    for control in ("#export-json", "#export-markdown"):
        expect(page.locator(control)).to_have_accessible_description(
            "A JSON or Markdown export is plain text: anyone who gets the file can read every "
            "message. Keep it safe, or download the encrypted archive instead.")

    with page.expect_download() as json_download:
        page.click("#export-json")
    exported = json.loads(Path(json_download.value.path()).read_text("utf-8"))
    assert exported["format"] == "securechat-export" and exported["version"] == 1
    (conversation,) = exported["conversations"]
    assert [m["content"] for m in conversation["messages"]] == [
        "export me, **bold**", "Echo: export me, **bold**"]
    json_file = tmp_path / "export.json"
    json_download.value.save_as(json_file)

    with page.expect_download() as md_download:
        page.click("#export-markdown")
    markdown = Path(md_download.value.path()).read_text("utf-8")
    assert "export me, **bold**" in markdown
    assert markdown.rstrip("\n").splitlines()[-1] == (
        "<!-- export complete: 1 conversations, 2 messages -->")

    page.fill("#archive-passphrase", "archive passphrase 1")
    with page.expect_download() as archive_download:
        page.click("#archive-submit")
    archive_file = tmp_path / "export.archive"
    archive_download.value.save_as(archive_file)
    # The file picker offers what the server names its downloads.
    accepted = page.locator("#import-file").get_attribute("accept") or ""
    for download in (json_download.value, archive_download.value):
        assert Path(download.suggested_filename).suffix in accepted.split(","), accepted
    assert b"export me" not in archive_file.read_bytes()
    expect(page.locator("#archive-passphrase")).to_have_value("")

    # Another account imports both: the plain export, then the archive with its passphrase.
    page.click("#logout")
    register(page, site.url, unique_name("importer"))
    page.click("#account-toggle")
    page.set_input_files("#import-file", str(json_file))
    page.click("#import-submit")
    expect(page.locator("#status")).to_have_text("Imported 1 conversation (2 messages).")
    expect(page.locator("button.conversation")).to_have_count(1)

    page.set_input_files("#import-file", str(archive_file))
    page.click("#import-submit")  # no passphrase: the page says what it needs
    expect(page.locator("#notice")).to_contain_text("type its passphrase")
    page.fill("#import-passphrase", "wrong passphrase")
    page.click("#import-submit")
    expect(page.locator("#notice")).to_be_visible()
    expect(page.locator("button.conversation")).to_have_count(1)
    page.fill("#import-passphrase", "archive passphrase 1")
    page.click("#import-submit")
    expect(page.locator("#status")).to_have_text("Imported 1 conversation (2 messages).")
    expect(page.locator("button.conversation")).to_have_count(2)
    page.locator("button.conversation").first.click()
    expect(page.locator("li.message .body")).to_have_text(
        ["export me, **bold**", "Echo: export me, bold"])
    assert web.problems() == []


# --- accessibility -------------------------------------------------------------------


def test_vendored_axe_is_the_recorded_file() -> None:
    recorded = json.loads((VENDOR / "SOURCE.json").read_text("utf-8"))
    data = (VENDOR / "axe.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == recorded["sha256"]
    assert data.startswith(f"/*! axe v{recorded['version']}".encode())
    assert (VENDOR / "LICENSE").read_text("utf-8").startswith("Mozilla Public License")


AXE_RUN = """async () => {
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => n.target.join(" ")) }));
}"""


def axe_violations(page: Page, where: str) -> list[dict[str, Any]]:
    """Run axe on the page as it is (injecting it once); print what it found."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(VENDOR / "axe.min.js"))
    results: list[dict[str, Any]] = page.evaluate(AXE_RUN)
    print(f"\n[web] axe, {where}: " + (", ".join(f"{v['id']} ({v['impact']})" for v in results)
                                      or "no violations"))
    return results


def serious(results: list[dict[str, Any]]) -> str:
    """The serious and critical violations, as JSON ("[]" for none)."""
    return json.dumps([v for v in results if v["impact"] in ("serious", "critical")], indent=1)


def test_axe_finds_no_serious_violations(site: Site, browser: Browser, tmp_path: Path) -> None:
    # axe is injected as a script tag, which the page's own CSP (script-src 'self') would
    # block: this one context bypasses the CSP so the checker can run. Every other browser
    # test runs with the CSP in force.
    with watched_page(browser, bypass_csp=True) as web:
        page = web.page
        page.goto(site.url + "/")
        expect(page.locator("#auth")).to_be_visible()
        page.click("#forgot")
        expect(page.locator("#recover-form")).to_be_visible()
        assert serious(axe_violations(page, "login with the recovery form")) == "[]"
        page.click("#forgot")
        page.fill("#username", unique_name("axe"))
        page.fill("#password", PASSWORD)
        page.click("#register")
        expect(page.locator("#code-dialog")).to_be_visible()
        assert serious(axe_violations(page, "the recovery code dialog")) == "[]"
        take_recovery_code(page)

        send(page, "some *Markdown* and code:\n```\nprint('hi')\n```")
        page.click("#new-conversation")
        send(page, "a second conversation")
        page.click("#account-toggle")
        expect(page.locator("#session-list li")).to_have_count(1)
        expect(page.locator("li.message.assistant .code-block")).to_have_count(0)
        page.locator("button.conversation").nth(1).click()
        expect(page.locator("li.message.assistant .code-block")).to_have_count(1)
        page.fill("#search-input", "code")
        results = axe_violations(page, "chat with the account panel open")
        screenshot(page, "web-account.png", tmp_path)
        assert serious(results) == "[]"
        page.set_viewport_size({"width": 390, "height": 760})
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.set_viewport_size({"width": 1100, "height": 720})

        # Keyboard: from the message box, Tab reaches Send; every visible control is a real
        # button, input or text area with a name.
        page.focus("#input")
        page.keyboard.press("Tab")
        expect(page.locator("#send")).to_be_focused()
        unnamed = page.evaluate("""() => [...document.querySelectorAll(
            "button, input:not([type=hidden]):not([hidden]), textarea")]
            .filter((el) => el.checkVisibility() && !el.labels?.length
                    && !el.getAttribute("aria-label") && !el.textContent.trim())
            .map((el) => el.id || el.outerHTML.slice(0, 60))""")
        assert unnamed == []
        # Nothing clickable that is not a button, link or form control.
        assert page.evaluate("""() => [...document.querySelectorAll("[onclick], [tabindex]")]
            .filter((el) => el.tabIndex >= 0 && !el.matches("button, a, input, textarea"))
            .map((el) => el.id)""") == []
