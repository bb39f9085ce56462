"""The web page's account panel and "forgot password" flow in a real Chromium (issue 13).

One browser and one served app for the whole module (each test has its own browser
context and its own user), to keep the browser tests' time down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from securechat import ChatClient
from securechat.errors import ApiError
from securechat.recovery import new_code
from tests.browser_helpers import (
    Site,
    WatchedPage,
    chromium,
    register,
    served_site,
    take_recovery_code,
    watched_page,
)
from tests.helpers import PASSWORD, unique_name

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with served_site(tmp_path_factory.mktemp("web") / "instance") as served:
        yield served


@pytest.fixture
def web(browser: Browser) -> Iterator[WatchedPage]:
    with watched_page(browser) as watched:
        yield watched


@pytest.fixture
def clients(site: Site) -> Iterator[Callable[[], ChatClient]]:
    """Factory of ChatClients (another device of the same person), closed afterwards."""
    made: list[ChatClient] = []

    def make() -> ChatClient:
        made.append(ChatClient(site.url, timeout=30))
        return made[-1]

    yield make
    for client in made:
        client.close()


def is_alive(client: ChatClient) -> bool:
    """Whether the client's session still works (a 401 with a session code says it ended)."""
    try:
        client.session()
    except ApiError as e:
        assert e.status == 401 and e.code in ("unauthorized", "session_expired"), e
        return False
    return True


def open_panel(page: Page) -> None:
    page.click("#account-toggle")
    expect(page.locator("#account-panel")).to_be_visible()
    expect(page.locator("#account-toggle")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#account-title")).to_be_focused()
    expect(page.locator("#event-list li").first).to_be_visible()  # loaded


def send(page: Page, text: str) -> None:
    replies = page.locator("li.message.assistant")
    before = replies.count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(replies).to_have_count(before + 1)
    expect(page.locator("#send")).to_be_enabled()


def test_register_shows_the_code_once_and_forgot_password_recovers(
        site: Site, web: WatchedPage, clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("forgetful")
    code = register(page, site.url, name)  # the dialog showed it, then it left the page
    assert code not in page.content()
    # Never kept by the page: no storage at all.
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    send(page, "remember me")
    page.click("#logout")
    expect(page.locator("#auth")).to_be_visible()

    page.fill("#username", name)
    page.click("#forgot")
    form = page.locator("#recover-form")
    expect(form).to_be_visible()
    expect(page.locator("#forgot")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#recover-username")).to_have_value(name)
    expect(page.locator("#recover-code")).to_be_focused()
    # A typo is caught by the check character; a well-formed wrong code says no more than
    # a wrong password would.
    page.fill("#recover-code", code[:-1])
    page.fill("#recover-password", NEW_PASSWORD)
    page.click("#recover-submit")
    expect(page.locator("#notice")).to_contain_text("recovery code")
    page.fill("#recover-code", new_code())
    page.fill("#recover-password", NEW_PASSWORD)
    page.click("#recover-submit")
    expect(page.locator("#notice")).to_have_text("Wrong username or recovery code.")
    expect(page.locator("#auth")).to_be_visible()

    page.fill("#recover-code", code.lower().replace("-", " "))  # case and spaces ignored
    page.fill("#recover-password", NEW_PASSWORD)
    page.click("#recover-submit")
    fresh = take_recovery_code(page)
    assert fresh != code
    expect(page.locator("#status")).to_contain_text("Your password is set")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("li.message.user .body")).to_have_text(["remember me"])  # history kept
    expect(page.locator("#input")).to_be_focused()
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0

    # The used code is dead; the new password logs in.
    with pytest.raises(ApiError) as failed:
        clients().recover(name, code, "yet another password")
    assert failed.value.status == 401
    clients().login(name, NEW_PASSWORD)
    assert web.problems() == []


def test_password_change_keeps_this_session_and_ends_the_others(
        site: Site, web: WatchedPage, clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("changer")
    code = register(page, site.url, name)
    other = clients()
    other.login(name, PASSWORD)
    open_panel(page)
    sessions = page.locator("#session-list li")
    expect(sessions).to_have_count(2)
    expect(page.locator("#session-list .this-session")).to_have_text("This session")

    # A wrong current password is refused, and ends nothing.
    page.fill("#current-password", "not my password")
    page.fill("#new-password", NEW_PASSWORD)
    page.click("#password-submit")
    expect(page.locator("#notice")).to_have_text("That password is not right.")
    expect(page.locator("#account-panel")).to_be_visible()
    assert is_alive(other)

    page.fill("#current-password", PASSWORD)
    page.fill("#new-password", NEW_PASSWORD)
    page.click("#password-submit")
    fresh = take_recovery_code(page)  # the code rotates with the password
    assert fresh != code
    expect(page.locator("#status")).to_contain_text("Every other session is logged out")
    expect(sessions).to_have_count(1)
    expect(sessions.first.locator(".this-session")).to_have_count(1)
    expect(page.locator('#event-list li[data-type="password_changed"]')).to_have_count(1)
    expect(page.locator('#event-list li[data-type="login_failed"]')).to_have_count(1)
    expect(page.locator("#current-password")).to_have_value("")
    assert not is_alive(other)
    send(page, "still here")  # this session goes on
    clients().login(name, NEW_PASSWORD)
    page.focus("#new-password")
    page.keyboard.press("Escape")  # leaves the panel, back to the button that opened it
    expect(page.locator("#account-panel")).to_be_hidden()
    expect(page.locator("#account-toggle")).to_be_focused()
    expect(page.locator("#account-toggle")).to_have_attribute("aria-expanded", "false")
    assert web.problems() == []


def test_sessions_revoke_and_new_recovery_code(
        site: Site, web: WatchedPage, clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("devices")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    code = register(page, site.url, name)
    phone, laptop = clients(), clients()
    phone.login(name, PASSWORD)
    laptop.login(name, PASSWORD)
    open_panel(page)
    sessions = page.locator("#session-list li")
    expect(sessions).to_have_count(3)
    # Each row says when it was made and last seen; only the others can be revoked here.
    expect(sessions.first).to_contain_text("last seen")
    expect(page.locator("#session-list button.revoke")).to_have_count(2)

    page.locator("#session-list button.revoke").first.click()
    expect(sessions).to_have_count(2)
    expect(page.locator("#status")).to_have_text("That session is logged out.")
    assert [is_alive(phone), is_alive(laptop)].count(True) == 1
    page.click("#revoke-others")
    expect(sessions).to_have_count(1)
    expect(page.locator("#status")).to_have_text("Every other session is logged out.")
    assert not is_alive(phone) and not is_alive(laptop)
    expect(page.locator('#event-list li[data-type="sessions_revoked"]')).to_have_count(1)
    expect(page.locator('#event-list li[data-type="session_revoked"]')).to_have_count(1)

    page.fill("#recovery-password", "wrong password")
    page.click("#recovery-submit")
    expect(page.locator("#notice")).to_have_text("That password is not right.")
    expect(page.locator("#code-dialog")).to_be_hidden()
    page.fill("#recovery-password", PASSWORD)
    page.click("#recovery-submit")
    # Esc does not skip the "written down" step.
    expect(page.locator("#code-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#code-dialog")).to_be_visible()
    page.click("#code-copy")
    expect(page.locator("#code-copy")).to_have_text("Copied")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    fresh = take_recovery_code(page)
    assert copied == fresh
    assert fresh != code
    expect(page.locator("#recovery-password")).to_have_value("")
    with pytest.raises(ApiError) as failed:  # the previous code stopped working
        clients().recover(name, code, NEW_PASSWORD)
    assert failed.value.status == 401
    assert web.problems() == []


def test_security_log_pages(site: Site, web: WatchedPage,
                            clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("logged")
    register(page, site.url, name)
    other = clients()
    for _ in range(12):  # 24 events after the page's own login
        other.login(name, PASSWORD)
        other.logout()
    open_panel(page)
    events = page.locator("#event-list li")
    expect(events).to_have_count(20)
    expect(events.first).to_contain_text("Logged out")  # newest first
    other.login(name, PASSWORD)
    newest = other.events(limit=2)["events"][1]  # before this login
    expect(page.locator("#event-list li time").first).to_have_attribute("datetime", newest["at"])
    more = page.locator("#events-more")
    expect(more).to_be_visible()
    more.click()
    expect(events).to_have_count(25)  # what there was when the panel opened
    expect(more).to_be_hidden()
    expect(events.last).to_contain_text("Logged in")  # the page's own, the oldest
    assert web.problems() == []


def test_retention_setting(site: Site, web: WatchedPage,
                           clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("keeper")
    register(page, site.url, name)
    other = clients()
    other.login(name, PASSWORD)
    open_panel(page)
    expect(page.locator("#retention-forever")).to_be_checked()
    expect(page.locator("#retention-days")).to_be_disabled()

    page.check("#retention-limited")
    expect(page.locator("#retention-days")).to_be_enabled()
    days = page.locator("#retention-days")
    days.fill("0")  # the browser's own check (min=1) keeps the form from being sent
    page.click("#retention-save")
    assert days.evaluate("(el) => el.validity.rangeUnderflow")
    days.fill("")  # an empty box passes the browser's check; the page's says no
    page.click("#retention-save")
    expect(page.locator("#notice")).to_have_text("Choose a number of days from 1 to 3650.")
    assert other.settings() == {"retention_days": None}

    page.fill("#retention-days", "30")
    page.click("#retention-save")
    expect(page.locator("#status")).to_have_text(
        "Unstarred conversations are deleted after 30 days without a new message.")
    assert other.settings() == {"retention_days": 30}
    page.reload()
    open_panel(page)
    expect(page.locator("#retention-limited")).to_be_checked()
    expect(page.locator("#retention-days")).to_have_value("30")

    page.check("#retention-forever")
    page.click("#retention-save")
    expect(page.locator("#status")).to_have_text("Conversations are kept forever.")
    assert other.settings() == {"retention_days": None}
    assert web.problems() == []


def test_delete_account_needs_password_and_typed_name(
        site: Site, web: WatchedPage, clients: Callable[[], ChatClient]) -> None:
    page = web.page
    name = unique_name("leaver")
    register(page, site.url, name)
    send(page, "soon gone")
    open_panel(page)

    page.fill("#delete-password", PASSWORD)
    page.fill("#delete-confirm", name + "x")
    page.click("#delete-account")
    expect(page.locator("#notice")).to_have_text("Type your username exactly to confirm the "
                                                 "deletion.")
    page.fill("#delete-password", "wrong password")
    page.fill("#delete-confirm", name)
    page.click("#delete-account")
    expect(page.locator("#notice")).to_have_text("That password is not right.")
    expect(page.locator("#chat")).to_be_visible()  # still logged in
    clients().login(name, PASSWORD)

    page.fill("#delete-password", PASSWORD)
    page.click("#delete-account")
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#account-panel")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Your account and everything in it is deleted.")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    expect(page.locator("#notice")).to_have_text("Wrong username or password.")
    with pytest.raises(ApiError):
        clients().login(name, PASSWORD)
    assert web.problems() == []
