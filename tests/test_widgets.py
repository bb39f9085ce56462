"""ChatBox without a browser: buttons are clicked and values set from code, as ipywidgets allows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import comm
import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from securechat import (
    ApiError,
    BackgroundServer,
    ChatBox,
    ChatClient,
    TransportError,
    create_app,
)
from securechat.widgets import describe_error, message_html, render_markdown
from tests.fake_backend import Flaky, wait_for
from tests.helpers import FAST, PASSWORD

ROOT = Path(__file__).resolve().parent.parent
WIDGETS = ROOT / "securechat" / "widgets"

XSS = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=1</script>",
    '"><svg onload=alert(1)>',
    "<a href=\"javascript:alert(1)\">click</a>",
    "**<b>bold</b>** `<i>code</i>` *<u>em</u>*",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "- <iframe src=//evil>\n- ok",
    "> <style>body{display:none}</style>",
    "# <h1 onclick=x>",
    "&lt;script&gt; already escaped &amp; double",
    "[link](javascript:alert(1)) ![img](x onerror=alert(1))",
]
MARKDOWN_TAGS = {"p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote"}


class _Tags(HTMLParser):
    """Collects every tag with its attributes, and anything that is not text or a tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.other: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.other.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.other.append("decl")

    def handle_pi(self, data: str) -> None:
        self.other.append("pi")

    def unknown_decl(self, data: str) -> None:
        self.other.append("unknown")


def parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser


def assert_safe_markdown(markup: str) -> None:
    parsed = parse(markup)
    assert parsed.other == []
    for tag, attrs in parsed.tags:
        assert tag in MARKDOWN_TAGS, tag
        assert attrs == [], (tag, attrs)


# --- the renderer ------------------------------------------------------------------------

@pytest.mark.parametrize("payload", XSS)
def test_markdown_keeps_no_html_of_the_message(payload: str) -> None:
    out = render_markdown(payload)
    assert_safe_markdown(out)
    # Every character of the payload is still there, as text.
    shown = "".join(parse(out).text)
    for word in ("script", "onerror", "svg", "iframe", "style", "javascript"):
        assert (word in payload) == (word in shown)


@given(st.text(alphabet=st.sampled_from(list("<>&\"'`*_-#>\n =/abc1.)[]()!")), max_size=80))
def test_markdown_output_only_ever_has_its_own_tags(text: str) -> None:
    assert_safe_markdown(render_markdown(text))


@given(st.text(max_size=200))
def test_markdown_any_text_is_safe(text: str) -> None:
    assert_safe_markdown(render_markdown(text))


@pytest.mark.parametrize(("source", "expected"), [
    ("**bold** and *em*", "<p><strong>bold</strong> and <em>em</em></p>"),
    ("`a < b`", "<p><code>a &lt; b</code></p>"),
    ("intro\n- one\n- two", "<p>intro</p><ul><li>one</li><li>two</li></ul>"),
    ("1. a\n2. b", "<ol><li>a</li><li>b</li></ol>"),
    ("```py\nx = '<'\n```", "<pre><code>x = &#x27;&lt;&#x27;</code></pre>"),
    ("line\nnext\n\npara", "<p>line<br>next</p><p>para</p>"),
    ("snake_case and 2*3*4", "<p>snake_case and 2*3*4</p>"),
])
def test_markdown_subset(source: str, expected: str) -> None:
    assert render_markdown(source) == expected


# Emphasis that never closes, 30 000 characters on one line: each failed attempt used to
# scan to the end of the line (quadratic, ~2 s per render and per streaming redraw).
# There is no timing assertion; a regression shows up as a slow test.
PATHOLOGICAL = 30_000


@pytest.mark.parametrize("unit", ["*a ", "**a ", "**a *b ", "***a ", "*a*a "])
def test_markdown_unclosed_emphasis_on_a_long_line_stays_text(unit: str) -> None:
    text = unit * (PATHOLOGICAL // len(unit))
    assert render_markdown(text) == f"<p>{text}</p>"


def test_markdown_unclosed_emphasis_in_a_long_list_item_stays_text() -> None:
    text = "- *a " * (PATHOLOGICAL // 5)
    assert render_markdown(text) == f"<ul><li>{text[2:]}</li></ul>"


def test_markdown_many_closed_emphases_on_a_long_line() -> None:
    out = render_markdown("*a* **b** " * (PATHOLOGICAL // 10))
    assert out.count("<em>a</em>") == out.count("<strong>b</strong>") == PATHOLOGICAL // 10
    assert_safe_markdown(out)


@pytest.mark.parametrize(("source", "expected"), [
    ("**bold *em* text**", "<p><strong>bold <em>em</em> text</strong></p>"),
    ("*not\nacross lines*", "<p>*not<br>across lines*</p>"),
    ("**not\nacross lines**", "<p>**not<br>across lines**</p>"),
])
def test_markdown_emphasis_nests_but_stays_on_its_line(source: str, expected: str) -> None:
    assert render_markdown(source) == expected


@pytest.mark.parametrize("payload", XSS)
def test_user_bubble_is_escaped_text(payload: str) -> None:
    parsed = parse(message_html("user", payload))
    assert [tag for tag, _ in parsed.tags] == ["div", "div", "div"]
    assert "".join(parsed.text) == "You" + payload


def test_unknown_role_is_not_trusted() -> None:
    markup = message_html('user" onmouseover="x', "<b>hi</b>")
    assert "onmouseover" not in markup and "<b>" not in markup


# --- the box against a real server ----------------------------------------------------------

@pytest.fixture
def box(client: ChatClient) -> Iterator[ChatBox]:
    made = ChatBox(client)
    yield made
    made.close()


def logged_in_box(make_user: Callable[..., ChatClient], stream: bool = True) -> ChatBox:
    return ChatBox(make_user(), stream=stream)




def shows_login(box: ChatBox) -> bool:
    return box.root.children[0] is box.login_panel


def bubble_markup(box: ChatBox) -> list[str]:
    """The HTML the browser gets for each message, oldest first."""
    return [bubble.value for bubble in box.bubbles.bubbles]


def test_login_failure_is_shown_and_password_not_kept(box: ChatBox) -> None:
    assert shows_login(box)
    box.username.value, box.password.value = "nobody", "wrong password"
    box.login_button.click()
    assert box.error == "Wrong username or password."
    assert shows_login(box) and not box.logged_in
    assert box.password.value == ""
    assert not box.login_button.disabled


def test_register_button_logs_in_and_shows_chat(box: ChatBox) -> None:
    box.username.value, box.password.value = "newcomer", PASSWORD
    box.register_button.click()
    assert box.logged_in and not shows_login(box), box.error
    assert box.password.value == ""
    assert "newcomer" in box.who.value
    assert box.conversations() == []


def test_register_refusal_is_shown(box: ChatBox) -> None:
    assert box.register("x", PASSWORD) is False
    assert "Usernames are 3-32" in box.error
    assert box.register("taken", PASSWORD) is True
    box.logout()
    assert box.register("TAKEN", PASSWORD) is False
    assert box.error == "That username is taken."


def test_enter_and_send_show_reply(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.input.value = "from the button"
    box.input.submit()
    assert box.wait(30)  # typed in the browser: the reply comes in a thread of its own
    # What the browser sends on Enter or Send (see ChatInput's module): the typed text.
    box.input._handle_custom_msg({"type": "submit", "text": "from Enter\nwith a new line"}, [])
    assert box.wait(30)
    assert box.transcript() == ("user: from the button\nassistant: Echo: from the button\n"
                                "user: from Enter\nwith a new line\n"
                                "assistant: Echo: from Enter\nwith a new line")
    assert box.input.value == "" and not box.input.disabled
    assert box.conversations()[0][0] == "from the button"  # titled after the first message
    assert len(bubble_markup(box)) == 4
    box.close()


def test_input_disabled_and_thinking_while_waiting(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user, stream=False)
    seen: dict[str, Any] = {}
    real_send = box.client.send

    def watching_send(conversation_id: str, content: str) -> dict[str, Any]:
        seen.update(input=box.input.disabled, picker=box.picker.disabled,
                    thinking=box.thinking.value, shown=box.thinking.layout.display)
        return real_send(conversation_id, content)

    box.client.send = watching_send  # type: ignore[method-assign]
    box.send("hello")
    assert seen == {"input": True, "picker": True, "thinking": "<i>thinking…</i>", "shown": None}
    assert not box.input.disabled and not box.picker.disabled
    assert box.thinking.layout.display == "none"
    # Enter while disabled sends nothing (a second message cannot overtake the first): the
    # text goes back into the box. A message that is not a well-formed submit is ignored.
    box.input.disabled = True
    box.input._handle_custom_msg({"type": "submit", "text": "not yet"}, [])
    assert box.input.value == "not yet"
    box.input.disabled = False
    box.input.value = ""
    for odd in ({"type": "submit", "text": 42}, {"type": "other", "text": "x"}, ["submit"]):
        box.input._handle_custom_msg(odd, [])
    assert len(box.messages) == 2
    box.close()


def test_server_stopped_gives_readable_error_and_usable_input(
        server: BackgroundServer, make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("before")
    server.stop()
    assert box.send("anyone there?") is None
    assert "Cannot reach" in box.error and "try again" in box.error
    assert "Traceback" not in box.error
    assert not box.input.disabled and not box.logout_button.disabled
    assert box.input.value == "anyone there?"  # kept, ready to send again
    assert [m["content"] for m in box.messages] == ["before", "Echo: before"]
    box.close()


@pytest.mark.parametrize("stream", [True, False])
def test_backend_failure_keeps_the_message_and_offers_retry(
        app: Flask, make_user: Callable[..., ChatClient], stream: bool) -> None:
    box = logged_in_box(make_user, stream=stream)
    backend = Flaky("down")
    app.extensions["securechat.responder"] = backend
    assert box.send("hello?") is None
    assert box.error == ("The server could not answer: The AI backend cannot be reached. "
                         "(HTTP 503). Try again.")
    assert [m["content"] for m in box.messages] == ["hello?"]  # stored before the backend
    # Stored, so not put back in the input (sending it again would store it twice)...
    assert box.input.value == "" and not box.input.disabled
    # ...but "Try again" asks for the missing reply.
    assert box.retry_button.layout.display is None
    box.retry_button.click()
    assert box.error.startswith("The server could not answer")  # still down
    assert box.retry_button.layout.display is None
    backend.mode = "ok"
    box.retry_button.click()
    assert box.error == "" and box.retry_button.layout.display == "none"
    assert box.transcript() == "user: hello?\nassistant: Mended: hello?"
    assert box.retry() is None and box.error == "The last message already has a reply."
    box.close()


@pytest.fixture
def one_event_per_chunk(settings: dict[str, Any]) -> None:
    """The server sends each chunk as its own event (no merging within a window)."""
    settings["STREAM_COALESCE_WINDOW"] = 0


def test_streamed_reply_is_drawn_as_it_arrives(one_event_per_chunk: None,
                                               make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.refresh_interval = 0  # redraw on every chunk
    drawn: list[str] = []
    watched: set[int] = set()

    def watch(change: dict[str, Any]) -> None:
        newest = change["new"][0].children[0]  # column-reverse: the newest row comes first
        if id(newest) not in watched:
            watched.add(id(newest))
            newest.observe(lambda c: drawn.append("".join(parse(c["new"]).text)), names="value")

    box.message_list.observe(watch, names="children")
    assert box.send("one two three") == box.messages[-1]
    # The echo streams "Echo: ", "one ", "two ", "three": the bubble grew chunk by chunk.
    assert drawn == ["AssistantEcho: one ", "AssistantEcho: one two ",
                     "AssistantEcho: one two three"]
    assert box.messages[-1]["id"] and box.transcript().endswith("Echo: one two three")
    box.close()


def test_reply_cut_short_is_marked_and_can_be_retried(
        app: Flask, make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    backend = Flaky("midway")
    app.extensions["securechat.responder"] = backend
    assert box.send("tell me") is None
    assert "took too long" in box.error and "HTTP 504" in box.error
    assert box.messages[-1] == {"role": "assistant", "content": "Partial ", "incomplete": True}
    assert "cut short" in bubble_markup(box)[-1]
    backend.mode = "ok"
    assert box.retry() == box.messages[-1]
    assert box.messages[-1]["content"] == "Mended: tell me"
    # Loaded again from the server, the cut reply keeps its mark.
    conversation = box.conversation_id
    assert conversation is not None
    box.new_draft()
    box.switch(conversation)
    assert [m.get("incomplete", False) for m in box.messages] == [False, True, False]
    assert "cut short" in bubble_markup(box)[1]
    box.close()


@pytest.mark.parametrize(("error", "shown"), [
    (ApiError(429, "rate_limited", "Too many requests; slow down."),
     "Too many requests; slow down. Wait a moment, then try again."),
    (ApiError(500, "internal_error", "Internal server error."),
     "The server could not answer: Internal server error. (HTTP 500). Try again."),
    (TransportError("timeout", "No answer in time."), "No answer in time. Check the server, "
     "then try again."),
])
def test_api_errors_are_shown_inline(make_user: Callable[..., ChatClient],
                                     error: ApiError | TransportError, shown: str) -> None:
    box = logged_in_box(make_user, stream=False)

    def failing(conversation_id: str, content: str) -> dict[str, Any]:
        raise error

    box.client.send = failing  # type: ignore[method-assign]
    assert box.send("hi") is None
    assert box.error == shown
    assert not box.input.disabled
    if isinstance(error, ApiError) and error.status >= 500:  # stored: ask again, not resend
        assert box.input.value == "" and box.retry_button.layout.display is None
    else:  # not stored: back in the input
        assert box.input.value == "hi" and box.retry_button.layout.display == "none"
    box.close()


@pytest.mark.parametrize(("error", "shown"), [
    (ApiError(429, "rate_limited", "Too many requests; slow down.", retry_after=42.0),
     "Too many requests; slow down. Try again in 42 seconds."),
    (ApiError(429, "rate_limited", "Too many requests; slow down.", retry_after=0.2),
     "Too many requests; slow down. Try again in 1 second."),
    (ApiError(429, "rate_limited", "Too many requests; slow down.", retry_after=3541.0),
     "Too many requests; slow down. Try again in 60 minutes."),
    (ApiError(503, "busy", "Too many replies at once.", retry_after=5.0),
     "The server could not answer: Too many replies at once. (HTTP 503). Try again in 5 "
     "seconds."),
])
def test_describe_error_says_how_long_to_wait(error: ApiError, shown: str) -> None:
    assert describe_error(error) == shown


def test_a_bug_is_shown_not_raised(make_user: Callable[..., ChatClient],
                                   caplog: pytest.LogCaptureFixture) -> None:
    box = logged_in_box(make_user, stream=False)

    def broken(conversation_id: str, content: str) -> dict[str, Any]:
        raise KeyError("reply")

    box.client.send = broken  # type: ignore[method-assign]
    assert box.send("hi") is None
    assert box.error == "Unexpected error (KeyError); see the log."
    assert "ChatBox action failed" in caplog.text
    assert not box.input.disabled
    box.close()


def test_session_expiry_returns_to_login(tmp_path: Path) -> None:
    now = [time.time()]
    app = create_app({**FAST, "CLOCK": lambda: now[0], "SESSION_IDLE_TIMEOUT": 60},
                     instance_path=tmp_path / "instance")
    with BackgroundServer(app) as server, ChatClient(server.url) as client:
        box = ChatBox(client)
        assert box.register("sleepy", PASSWORD)
        box.send("before the nap")
        now[0] += 120  # past the idle timeout
        assert box.send("after the nap") is None
        assert shows_login(box) and not box.logged_in
        assert "session expired" in box.error
        assert box.login("sleepy", PASSWORD)
        assert box.input.value == "after the nap"  # still there to send again
        assert box.transcript() == "user: before the nap\nassistant: Echo: before the nap"
        box.close()


def test_session_revoked_elsewhere_returns_to_login(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.client.http.cookies.clear()  # as if the session were gone
    box.new_button.click()
    box.input.value = "hi"
    box.input.submit()
    assert box.wait(30)
    assert shows_login(box)
    assert "log in again" in box.error
    box.close()


def test_logout_button_shows_login_and_forgets_session(
        make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("hi")
    box.logout_button.click()
    assert shows_login(box) and not box.logged_in
    assert box.error == "Logged out."
    assert box.client.csrf_token is None and box.messages == []
    assert box.send("nope") is None and box.error == "Log in first."
    box.close()


def test_switching_loads_history(make_user: Callable[..., ChatClient]) -> None:
    client = make_user()
    first = client.new_conversation("first")
    client.send(first["id"], "in the first")
    second = client.new_conversation("second")
    client.send(second["id"], "in the second")
    box = ChatBox(client)  # already logged in: straight to the chat, newest shown
    assert not shows_login(box)
    assert [title for title, _ in box.conversations()] == ["second", "first"]
    assert box.transcript() == "user: in the second\nassistant: Echo: in the second"

    box.picker.value = first["id"]  # what choosing in the dropdown does
    assert box.conversation_id == first["id"]
    assert box.transcript() == "user: in the first\nassistant: Echo: in the first"
    assert box.switch(second["id"]) and box.picker.value == second["id"]
    assert box.switch("0" * 32) is False and box.error == "No such conversation."
    assert box.conversation_id == second["id"]
    box.close()


def test_switching_loads_every_page(make_user: Callable[..., ChatClient]) -> None:
    client = make_user()
    conv = client.new_conversation("long")
    for i in range(101):  # 202 messages: more than one page of 200
        client.send(conv["id"], f"message {i}")
    box = ChatBox(client)
    assert len(box.messages) == 202
    assert box.messages[0]["content"] == "message 0"
    assert box.messages[-1]["content"] == "Echo: message 100"
    box.close()


def test_new_and_delete_buttons(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("one")
    box.new_button.click()
    assert box.messages == [] and box.conversation_id is None
    assert box.delete_button.disabled  # nothing to delete in a draft
    box.send("two")
    assert [title for title, _ in box.conversations()] == ["two", "one"]
    box.delete_button.click()
    box.confirm_delete_button.click()
    assert [title for title, _ in box.conversations()] == ["one"]
    assert box.transcript() == "user: one\nassistant: Echo: one"
    assert box.new_conversation("titled") is not None
    assert box.conversations()[0][0] == "titled" and box.messages == []
    box.close()


def test_delete_button_asks_first(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send('<img src=x onerror="window.pwned=1"> title')  # the first message names it
    box.send("second message")
    shown = box.conversation_id
    assert box.confirm_row.layout.display == "none"
    box.delete_button.click()
    # Nothing is gone yet: a row asks, naming the conversation (escaped, never markup).
    assert box.confirm_row.layout.display is None
    assert [c["id"] for c in box.client.conversations()] == [shown]
    assert box.confirm_text.value.startswith(
        "Delete <b>\u2018&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt; title"
        "\u2019</b> and all its messages?")
    assert "<img" not in box.confirm_text.value
    box.cancel_delete_button.click()
    assert box.confirm_row.layout.display == "none" and box.confirm_text.value == ""
    assert [c["id"] for c in box.client.conversations()] == [shown]
    assert box.conversation_id == shown and len(box.messages) == 4
    # Asked, then confirmed: deleted.
    box.delete_button.click()
    box.confirm_delete_button.click()
    assert box.client.conversations() == [] and box.conversation_id is None
    assert box.confirm_row.layout.display == "none"
    box.close()


def test_a_pending_confirmation_is_dropped_when_leaving_the_conversation(
        make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("first")
    first = box.conversation_id
    box.new_button.click()
    box.send("second")
    box.delete_button.click()  # asks about "second"...
    assert box.confirm_row.layout.display is None
    box.picker.value = first  # ...then the person picks another conversation
    assert box.confirm_row.layout.display == "none"
    box.confirm_delete_button.click()  # a stale click deletes nothing
    assert len(box.client.conversations()) == 2
    box.delete_button.click()
    box.new_button.click()
    assert box.confirm_row.layout.display == "none"
    box.delete_button.click()  # a draft: nothing to ask about
    assert box.confirm_row.layout.display == "none"
    box.close()


def test_delete_from_code_is_direct(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("gone at once")
    assert box.delete_conversation() is True
    assert box.client.conversations() == [] and box.confirm_row.layout.display == "none"
    box.close()


# --- the cursor goes to the message box after what the person clicked -----------------

@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every message the widgets send towards the browser: (model id, type, data)."""
    log: list[tuple[str, str, dict[str, Any]]] = []

    def record(self: comm.base_comm.BaseComm, msg_type: str, data: Any = None,
               *_args: Any, **_kwargs: Any) -> None:
        log.append((self.comm_id, msg_type, data or {}))

    monkeypatch.setattr(comm.DummyComm, "publish_msg", record)
    return log


def focus_requests(sent: list[tuple[str, str, dict[str, Any]]], box: ChatBox) -> int:
    return sum(1 for model, _kind, data in sent if model == box.input.model_id
               and data.get("method") == "custom" and data.get("content") == {"type": "focus"})


def value_updates(sent: list[tuple[str, str, dict[str, Any]]], box: ChatBox) -> list[str]:
    return [data["state"]["value"] for model, _kind, data in sent
            if model == box.input.model_id and data.get("method") == "update"
            and "value" in data.get("state", {})]


def test_focus_after_login_register_new_and_picking(
        client: ChatClient, sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = ChatBox(client)
    box.username.value, box.password.value = "focused", PASSWORD
    box.register_button.click()
    assert box.logged_in and focus_requests(sent, box) == 1
    box.send("first")
    first = box.conversation_id
    box.new_button.click()
    assert focus_requests(sent, box) == 2
    box.send("second")
    box.picker.value = first  # picked in the dropdown
    assert box.conversation_id == first and focus_requests(sent, box) == 3
    box.logout_button.click()
    box.username.value, box.password.value = "focused", "wrong password"
    box.login_button.click()
    assert focus_requests(sent, box) == 3  # a failed login keeps the cursor in the form
    box.username.value, box.password.value = "focused", PASSWORD
    box.login_button.click()
    assert focus_requests(sent, box) == 4
    box.close()


def test_no_focus_when_driven_from_code(
        client: ChatClient, sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    # In a notebook the cursor must stay where the reader is: Shift+Enter runs the next cell.
    box = ChatBox(client)
    assert box.register("coded", PASSWORD)
    box.send("one")
    first = box.conversation_id
    assert first is not None
    box.new_draft()
    box.send("two")
    assert box.switch(first)
    box.logout()
    assert box.login("coded", PASSWORD)
    assert focus_requests(sent, box) == 0
    box.close()


# --- typing while a reply is on its way ----------------------------------------------

def test_the_box_stays_editable_while_a_reply_is_pending() -> None:
    esm = (WIDGETS / "chat_input.js").read_text("utf-8")
    # Only sending waits: the textarea is never disabled, the Send button is.
    assert "box.disabled" not in esm
    assert "send.disabled = model.get(\"disabled\")" in esm


def test_a_sent_message_never_syncs_back_over_newer_typing(
        make_user: Callable[..., ChatClient], sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    # Enter in the browser: the text comes in a submit message, the browser empties its box.
    box.input._handle_custom_msg({"type": "submit", "text": "typed and sent"}, [])
    assert box.wait(30)
    assert box.transcript() == "user: typed and sent\nassistant: Echo: typed and sent"
    # Python never echoed the text into `value`, nor cleared it when the reply landed:
    # whatever the person typed meanwhile is left alone.
    assert value_updates(sent, box) == []
    assert box.input.value == ""
    box.close()


def test_a_message_that_was_not_sent_is_given_back(
        server: BackgroundServer, make_user: Callable[..., ChatClient],
        sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    server.stop()
    box.input._handle_custom_msg({"type": "submit", "text": "not delivered"}, [])
    assert box.wait(30)
    # One update: the text, back into the box (the browser puts newer typing after it).
    assert value_updates(sent, box) == ["not delivered"]
    assert box.messages == []
    box.close()


def test_a_submit_while_busy_is_given_back(
        make_user: Callable[..., ChatClient], sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    box.input.disabled = True  # a reply is pending
    box.input._handle_custom_msg({"type": "submit", "text": "too early"}, [])
    assert box.messages == [] and value_updates(sent, box) == ["too early"]
    box.close()


def test_xss_payloads_are_escaped_in_the_rendered_bubbles(
        make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    for payload in XSS:
        box.send(payload)
    markup = bubble_markup(box)
    assert len(markup) == 2 * len(XSS)
    for bubble in markup:
        parsed = parse(bubble)
        assert parsed.other == []
        outer, label, *rest = parsed.tags
        # Our own wrapper and label carry fixed attributes; the rest are bare Markdown tags.
        assert outer[0] == "div" and {name for name, _ in outer[1]} == {"class", "style"}
        assert label[0] == "div" and {name for name, _ in label[1]} == {"style"}
        for tag, attrs in rest:
            assert tag in MARKDOWN_TAGS | {"div"}, tag
            assert tag == "div" or attrs == []
    assert "&lt;script&gt;" in "".join(markup) and "<script" not in "".join(markup)
    box.close()


def _saved_widget_state(sent: list[tuple[str, str, dict[str, Any]]]) -> str:
    """The widget state as nbconvert's executor saves it: each model's last synced values."""
    state: dict[str, dict[str, Any]] = {}
    for comm_id, _kind, data in sent:
        if "state" in data:
            state.setdefault(comm_id, {}).update(data["state"])
    return json.dumps(state)


def test_close_leaves_no_chat_in_saved_widget_state(
        monkeypatch: pytest.MonkeyPatch, make_user: Callable[..., ChatClient]) -> None:
    # Every message the widgets send towards the browser, closed ones included.
    sent: list[tuple[str, str, dict[str, Any]]] = []

    def record(self: comm.base_comm.BaseComm, msg_type: str, data: Any = None,
               *_args: Any, **_kwargs: Any) -> None:
        sent.append((self.comm_id, msg_type, data or {}))

    monkeypatch.setattr(comm.DummyComm, "publish_msg", record)
    box = logged_in_box(make_user)
    box.send("first private plan")
    box.new_button.click()  # the first conversation's bubbles are discarded
    box.send("second private plan")
    box.input.value = "an unsent private draft"
    saved = _saved_widget_state(sent)
    # The recorder sees what is shown (else this test could not fail)...
    assert "second private plan" in saved and "first private plan" in saved
    assert "an unsent private draft" in saved
    closed_before = {cid for cid, kind, _ in sent if kind == "comm_close"}
    model_ids = {widget.model_id for widget in box._widgets()}
    box.close()
    # ...and after close() none of it is left in any model's last state.
    assert "private" not in _saved_widget_state(sent)
    closed = {cid for cid, kind, _ in sent if kind == "comm_close"}
    assert model_ids <= closed - closed_before
    assert box.messages == [] and box.conversations() == []


def test_display_and_close(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("hi")
    bundle = box._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == box.root.model_id
    # What a saved notebook keeps as text: who and where, never the chat (the bubbles' HTML).
    assert data["text/plain"] == repr(box) and "hi" not in data["text/plain"]
    widgets = [box.root, box.input, box.picker, box.message_list, *box.message_list.children]
    box.close()
    assert all(widget.comm is None for widget in widgets)
    assert "ChatBox" in repr(box)


# --- a server install has no Jupyter -----------------------------------------------------

JUPYTER = ("ipywidgets", "anywidget", "traitlets")


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


def test_the_renderer_imports_no_widget_library() -> None:
    out = _python("import sys\n"
                  "import securechat.widgets.markdown, securechat.widgets, securechat\n"
                  f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {JUPYTER!r}))\n"
                  "from securechat.widgets import ChatBox\n"  # the widget itself does, lazily
                  f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & {set(JUPYTER)!r}))")
    assert out.splitlines() == ["[]", str(sorted(JUPYTER))]


def test_without_jupyter_the_renderer_works_and_the_widget_says_what_is_missing() -> None:
    code = ("import sys\n"
            f"for name in {JUPYTER!r}:\n"
            "    sys.modules[name] = None  # not installed: importing it fails\n"
            "import securechat\n"
            "from securechat.widgets import describe_error, message_html, render_markdown\n"
            "from securechat.errors import TransportError\n"
            "print(render_markdown('**x**'))\n"
            "print(message_html('user', '<b>'))\n"
            "print(describe_error(TransportError('unreachable', 'Cannot reach the server.')))\n"
            "for get in (lambda: securechat.ChatBox, lambda: securechat.widgets.ChatInput):\n"
            "    try:\n"
            "        get()\n"
            "    except ImportError as e:\n"
            "        print(type(e).__name__, e)\n")
    out = _python(code).splitlines()
    assert out[:3] == ["<p><strong>x</strong></p>", message_html("user", "<b>"),
                       "Cannot reach the server. Check the server, then try again."]
    for line, name in zip(out[3:], ["ChatBox", "ChatInput"], strict=True):
        assert line == (f"ImportError securechat.widgets.{name} needs ipywidgets and anywidget, "
                        "which are not installed here (pip install 'securechat[notebook]')")


# --- the input's browser half: files next to its class, shipped in the wheel ---------------

def test_the_input_sends_its_files_to_the_browser(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    # The synced module and style are the files, byte for byte (nothing inline).
    assert box.input._esm == (WIDGETS / "chat_input.js").read_text("utf-8")
    assert box.input._css == (WIDGETS / "chat_input.css").read_text("utf-8")
    assert "export default { initialize, render };" in box.input._esm
    assert ".securechat-msg pre" in box.input._css
    box.close()


def test_the_input_module_has_no_html_sink() -> None:
    # A file now, so the audit of the page's JavaScript (tests/test_static_js.py) covers it too.
    from securechat.lab import attacks

    assert attacks.audit_file(WIDGETS / "chat_input.js") == []


def test_the_input_files_ship_in_the_wheel(tmp_path: Path) -> None:
    # Built as pip builds it (an isolated setuptools, the project's package-data rules), from
    # a copy, so the checkout gets no build/ or egg-info folder.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "securechat", tmp_path / "securechat",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", "dist"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=240)
    (wheel,) = (tmp_path / "dist").glob("securechat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "securechat/widgets/chat_input.py" in names  # the wheel is the package
        for name in ("chat_input.js", "chat_input.css"):
            member = f"securechat/widgets/{name}"
            assert member in names, f"{name} is missing from the wheel"
            assert archive.read(member) == (WIDGETS / name).read_bytes(), name


# --- your data, your keys: the recovery code and the account panel ------------------------

NEW_PASSWORD = "a different long passphrase"


def second_login(make_client: Callable[[], ChatClient], username: str,
                 password: str = PASSWORD) -> ChatClient:
    other = make_client()
    other.login(username, password)
    return other


def logged_out(client: ChatClient) -> bool:
    """True when the server no longer knows this client's session."""
    try:
        client.session()
    except ApiError as e:
        return e.code == "unauthorized"
    return False


def test_register_shows_the_recovery_code_once_masked(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    box.username.value, box.password.value = "coded", PASSWORD
    box.register_button.click()
    code = box.recovery_code
    assert code is not None and box.code_view.view.layout.display is None
    real = code.reveal()
    # Printed, displayed or repr'd, the code stays hidden; the widget holds its shape only.
    for shown in (repr(code), str(code), code._repr_html_(), box.code_view.text.value,
                  repr(box)):
        assert real not in shown and real.replace("-", "") not in shown
    assert "••••-••••-" in box.code_view.text.value
    box.code_view.reveal_button.value = True  # Show
    assert real in box.code_view.text.value and box.code_view.reveal_button.description == "Hide"
    box.code_view.reveal_button.value = False
    assert real not in box.code_view.text.value
    box.code_view.done_button.click()  # I saved it
    assert box.recovery_code is None and box.code_view.text.value == ""
    assert box.code_view.view.layout.display == "none"
    # The code shown was the account's real one: it sets a new password.
    other = make_client()
    assert other.recover("coded", real, NEW_PASSWORD)
    assert other.username == "coded"


def test_recovery_from_the_login_form_keeps_the_history(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("forgetful", PASSWORD)
    code = box.recovery_code
    assert code is not None
    box.send("remember me")
    box.logout()
    box.username.value = "forgetful"
    box.login_form.forgot_button.value = True
    assert box.login_form.recover_row.layout.display is None
    box.login_form.recovery_code.value = code.reveal().lower()  # case and hyphens are ignored
    box.login_form.new_password.value = NEW_PASSWORD
    box.login_form.recover_button.click()
    assert box.logged_in, box.error
    assert box.login_form.recovery_code.value == box.login_form.new_password.value == ""
    assert box.transcript() == "user: remember me\nassistant: Echo: remember me"
    new_code = box.recovery_code
    assert new_code is not None and new_code.reveal() != code.reveal()  # the used one is spent
    # The old code is dead; the new password works.
    stranger = make_client()
    with pytest.raises(ApiError) as e:
        stranger.recover("forgetful", code.reveal(), PASSWORD)
    assert e.value.code == "invalid_credentials"
    stranger.login("forgetful", NEW_PASSWORD)


def test_recovery_with_a_mistyped_code_is_refused_inline(box: ChatBox) -> None:
    assert box.register("typo", PASSWORD)
    code = box.recovery_code
    assert code is not None
    box.logout()
    wrong = code.reveal()[:-1] + ("0" if code.reveal()[-1] != "0" else "1")
    assert box.recover("typo", wrong, NEW_PASSWORD) is False
    assert "typo" in box.error and not box.logged_in


def test_change_password_from_the_panel(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("changer", PASSWORD)
    first_code = box.recovery_code
    assert first_code is not None
    elsewhere = second_login(make_client, "changer")
    box.account_button.value = True
    assert box.account.is_open and len(box.account.sessions_box.children) == 2
    box.account.current_password.value = PASSWORD
    box.account.new_password.value = NEW_PASSWORD
    box.account.change_password_button.click()
    assert box.error == ""
    # The passwords typed are not kept in the widgets; a new code is shown, masked.
    assert box.account.current_password.value == box.account.new_password.value == ""
    code = box.recovery_code
    assert code is not None and code.reveal() != first_code.reveal()
    assert code.reveal() not in box.code_view.text.value
    # Every other session ended, this one stays; the list now shows one.
    assert logged_out(elsewhere)
    assert box.logged_in and box.send("still here") is not None
    assert len(box.account.sessions_box.children) == 1
    assert "password changed" in box.account.log.value
    make_client().login("changer", NEW_PASSWORD)


def test_a_wrong_password_on_the_panel_keeps_the_session(
        make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    assert box.change_password("not my password", NEW_PASSWORD) is None
    assert box.error == "That password is not right."
    assert box.logged_in and not shows_login(box)
    assert box.new_recovery_code("not my password") is None and box.logged_in
    assert box.delete_account("not my password") is False and box.logged_in
    assert box.send("still in") is not None
    box.close()


def test_a_new_recovery_code_replaces_the_old(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("rotator", PASSWORD)
    old = box.recovery_code
    assert old is not None
    box.account.code_password.value = PASSWORD
    box.account.new_code_button.click()
    new = box.recovery_code
    assert new is not None and new.reveal() != old.reveal()
    assert box.account.code_password.value == ""
    with pytest.raises(ApiError):
        make_client().recover("rotator", old.reveal(), NEW_PASSWORD)
    assert make_client().recover("rotator", new.reveal(), NEW_PASSWORD)


def test_sessions_are_listed_and_revoked(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("traveller", PASSWORD)
    phone = second_login(make_client, "traveller")
    laptop = second_login(make_client, "traveller")
    listed = box.sessions()
    assert len(listed) == 3 and [s["current"] for s in listed].count(True) == 1
    assert len(box.account.sessions_box.children) == 3
    assert "(this session)" in "".join(
        row.children[0].value for row in box.account.sessions_box.children)
    phone_id = next(s["id"] for s in phone.sessions() if s["current"])
    assert box.revoke(phone_id)
    assert logged_out(phone) and not logged_out(laptop)
    assert box.revoke_other_sessions()
    assert logged_out(laptop) and len(box.sessions()) == 1
    # Revoking this box's own session logs it out here.
    own = next(s["id"] for s in box.sessions() if s["current"])
    assert box.revoke(own)
    assert shows_login(box) and box.error == "This session was revoked; log in again."
    assert box.account.sessions_box.children == ()


def test_revoke_buttons_in_the_panel(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("clicker", PASSWORD)
    other = second_login(make_client, "clicker")
    box.account_button.value = True
    rows = box.account.sessions_box.children
    other_row = next(r for r in rows if "(this session)" not in r.children[0].value)
    other_row.children[1].click()  # Revoke
    assert logged_out(other) and len(box.account.sessions_box.children) == 1
    box.account.revoke_others_button.click()
    assert box.logged_in and box.error == ""


def test_security_log_is_shown_newest_first_and_pages(box: ChatBox) -> None:
    assert box.register("logged", PASSWORD)
    for _ in range(12):  # 24 events: more than one page of 20
        assert box.revoke_other_sessions()
        assert box.set_retention(None)
    events = box.security_log()
    assert len(events) == 20 and events[0]["type"] == "settings_changed"
    assert box.security_log(more=True)[-1]["type"] == "login"  # the oldest: the first login
    assert len(box.security_log(more=True)) == 25
    assert box.account.older_button.disabled
    log_html = box.account.log.value
    assert "settings changed" in log_html and "logged in" in log_html
    assert all(set(e) <= {"type", "at", "address"} for e in events)  # metadata only


def test_retention_setting(box: ChatBox) -> None:
    assert box.register("keeper", PASSWORD)
    box.account_button.value = True
    assert box.account.retention.value == 0
    assert "kept until you delete them" in box.account.retention_note.value
    box.account.retention.value = 30
    box.account.save_retention_button.click()
    assert box.client.settings() == {"retention_days": 30}
    assert "idle for 30 days" in box.account.retention_note.value
    assert box.set_retention(None) and box.client.settings() == {"retention_days": None}
    assert box.account.retention.value == 0
    box.account_button.value = False
    assert not box.account.is_open


def test_deleting_the_account_asks_for_the_username(
        box: ChatBox, make_client: Callable[[], ChatClient]) -> None:
    assert box.register("leaving", PASSWORD)
    box.send("my last words")
    box.account_button.value = True
    box.account.delete_password.value = PASSWORD
    box.account.delete_confirm.value = "leavin"  # not the username
    box.account.delete_account_button.click()
    assert box.error == "Type your username to confirm deleting the account."
    assert box.logged_in and box.account.delete_password.value == ""
    make_client().login("leaving", PASSWORD)  # still there
    box.account.delete_password.value = PASSWORD
    box.account.delete_confirm.value = "leaving"
    box.account.delete_account_button.click()
    assert shows_login(box) and not box.logged_in
    assert box.error == "Your account and everything in it were deleted."
    assert "role=\"alert\"" in box.notice.value and "b00020" not in box.notice.value
    with pytest.raises(ApiError) as e:
        make_client().login("leaving", PASSWORD)
    assert e.value.code == "invalid_credentials"


def test_close_leaves_no_recovery_code_or_session_in_saved_widget_state(
        box: ChatBox, make_client: Callable[[], ChatClient],
        sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    assert box.register("closer", PASSWORD)
    second_login(make_client, "closer")
    box.account_button.value = True
    box.code_view.reveal_button.value = True
    code = box.recovery_code
    assert code is not None
    box.account.delete_password.value = PASSWORD  # typed, not yet submitted
    saved = _saved_widget_state(sent)
    assert code.reveal() in saved and PASSWORD in saved and "last seen" in saved
    box.close()
    saved_after = _saved_widget_state(sent)
    assert code.reveal() not in saved_after and "last seen" not in saved_after
    assert PASSWORD not in saved_after


# --- what a chat user expects: stop, copy, shortcuts ---------------------------------------

class Gated:
    """A backend that sends its first words, then waits for ``release`` (at most 20 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def reply(self, history: list[Any]) -> str:
        return "whole reply"

    def stream(self, history: list[Any]) -> Iterator[str]:
        yield "First words "
        self.release.wait(20)
        # Several writes: the server learns that the reader has gone from a failed write,
        # and the first one after the reader left may still succeed.
        for word in ("and ", "the ", "rest"):
            time.sleep(0.05)
            yield word


def custom_messages(sent: list[tuple[str, str, dict[str, Any]]], box: ChatBox) -> list[Any]:
    return [data["content"] for model, _kind, data in sent
            if model == box.input.model_id and data.get("method") == "custom"]


@pytest.mark.parametrize("how", ["from-the-browser", "from-code"])
def test_stop_keeps_the_partial_reply_marked(
        app: Flask, make_user: Callable[..., ChatClient], how: str) -> None:
    box = logged_in_box(make_user)
    backend, echo = Gated(), app.extensions["securechat.responder"]
    app.extensions["securechat.responder"] = backend
    box.input._handle_custom_msg({"type": "submit", "text": "tell me everything"}, [])
    wait_for(lambda: len(box.messages) == 2)  # the first words are on screen
    assert box.input.streaming and box.input.disabled  # Stop is offered, Send waits
    if how == "from-code":
        box.stop()
    else:  # the browser's Stop button and Esc both send this
        box.input._handle_custom_msg({"type": "stop"}, [])
    assert box.wait(10), "the reply did not stop"
    backend.release.set()
    assert box.messages[-1] == {"role": "assistant", "content": "First words ",
                                "incomplete": True, "stopped": True}
    assert "cut short" in bubble_markup(box)[-1]
    assert box.error == "" and not box.input.disabled and not box.input.streaming
    # The server kept what was generated, marked incomplete, too.
    conversation = box.conversation_id
    assert conversation is not None
    stored = wait_for(lambda: [m for m in box.client.history(conversation)
                               if m["role"] == "assistant"])
    assert stored[-1]["incomplete"] and stored[-1]["content"].startswith("First words")
    # And the box is ready for the next message.
    app.extensions["securechat.responder"] = echo
    assert box.send("next") is not None and box.messages[-1]["content"] == "Echo: next"
    box.close()


def test_stop_with_no_reply_on_its_way_does_nothing(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("hello")
    box.input._handle_custom_msg({"type": "stop"}, [])
    assert not box.input.streaming
    assert box.send("again") is not None  # a stop pressed earlier does not cut the next reply
    assert box.messages[-1] == {**box.messages[-1], "content": "Echo: again"}
    assert "incomplete" not in box.messages[-1]
    box.close()


def test_one_reply_at_a_time_from_the_browser(
        app: Flask, make_user: Callable[..., ChatClient],
        sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    backend = Gated()
    app.extensions["securechat.responder"] = backend
    box.input._handle_custom_msg({"type": "submit", "text": "first"}, [])
    wait_for(lambda: len(box.messages) == 2)
    box.input.disabled = False  # even if the browser sends while it should wait...
    box.input._handle_custom_msg({"type": "submit", "text": "second"}, [])
    assert box.input.value == "second"  # ...the text goes back into the box, unsent
    backend.release.set()
    assert box.wait(10)
    assert [m["content"] for m in box.messages] == ["first", "First words and the rest"]
    box.close()


def test_copy_a_message_and_a_code_block(
        make_user: Callable[..., ChatClient], sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    box.send("see:\n```\nx = '<b>'\n```\nand\n```\ny = 2\n```")
    rows = [row for row in reversed(box.message_list.children)]
    question_buttons = rows[0].children[1].children
    reply_buttons = rows[1].children[1].children
    assert [b.description for b in question_buttons] == ["Copy"]  # a user's text is not Markdown
    assert [b.description for b in reply_buttons] == ["Copy", "Copy code 1", "Copy code 2"]
    reply_buttons[0].click()
    reply_buttons[1].click()
    assert custom_messages(sent, box) == [
        {"type": "copy", "text": box.messages[1]["content"]},
        {"type": "copy", "text": "x = '<b>'"},  # the code as shown, not its escaped HTML
    ]
    assert box.copy_code(-1, 1) == "y = 2" and box.copy(0) == box.messages[0]["content"]
    # The browser answers whether the clipboard took it.
    box.input._handle_custom_msg({"type": "copied", "ok": True}, [])
    assert box.error == "Copied."
    box.input._handle_custom_msg({"type": "copied", "ok": False}, [])
    assert "did not allow copying" in box.error
    box.input._handle_custom_msg({"type": "copied", "ok": "yes"}, [])  # malformed: ignored
    assert "did not allow copying" in box.error
    box.close()


def test_a_streamed_reply_gets_its_code_buttons(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.refresh_interval = 0
    box.send("```\none\n```")
    (copy, code) = list(box.message_list.children)[0].children[1].children
    assert (copy.description, code.description) == ("Copy", "Copy code")
    box.close()


def test_the_input_module_has_the_keyboard_shortcuts_and_labels() -> None:
    esm = (WIDGETS / "chat_input.js").read_text("utf-8")
    # Enter sends, Shift+Enter is the textarea's own new line, Esc stops a streaming reply.
    assert 'event.key === "Enter" && !event.shiftKey' in esm
    assert 'event.key === "Escape"' in esm and 'model.send({ type: "stop" })' in esm
    assert 'setAttribute("aria-keyshortcuts", "Enter Shift+Enter Escape")' in esm
    assert 'setAttribute("aria-label", "Message")' in esm
    assert 'setAttribute("aria-label", "Stop generating")' in esm
    assert 'stop.style.display = model.get("streaming") ? "" : "none"' in esm


# --- conversations: star, rename, search; regenerate, edit; temporary chats; export ------

def titles(box: ChatBox) -> list[str]:
    return [title for title, _ in box.conversations()]


def test_star_and_rename(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("older one")
    older = box.conversation_id
    box.new_draft()
    box.send("newer one")
    assert titles(box) == ["newer one", "older one"]
    box.switch(older or "")
    box.star_button.value = True  # what clicking *Star* does
    assert titles(box) == ["★ older one", "newer one"]  # starred first
    assert box.client.conversations()[0]["starred"] is True
    assert box.conversation_id == older and box.star_button.value
    assert box.star(False) and titles(box) == ["newer one", "older one"]
    assert not box.star_button.value
    # Rename in the row *Rename* opens, with the title to edit.
    box.rename_button.click()
    assert box.chats.rename_row.layout.display is None
    assert box.chats.title_field.value == "older one"
    box.chats.title_field.value = "<b>renamed</b>"
    box.chats.save_title_button.click()
    assert box.chats.rename_row.layout.display == "none" and box.chats.title_field.value == ""
    assert "<b>renamed</b>" in titles(box)  # a title is text (the dropdown escapes it)
    assert box.rename("   ") is False and "title" in box.error.lower()  # the server's 400
    assert box.rename("from code", conversation_id=older) and "from code" in titles(box)
    box.close()


def test_search_and_open_a_result(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("the blue pot <hides> the key")
    with_key = box.conversation_id
    box.new_draft()
    box.send("nothing here")
    box.finder.query.value = "KEY"
    box.finder.search_button.click()
    results = box.finder.results
    assert {r["conversation_id"] for r in results} == {with_key}
    assert "match" in box.finder.summary.value
    shown = box.finder.result_box.children[0].children[0].value
    assert "<mark>key</mark>" in shown and "&lt;hides&gt;" in shown and "<hides>" not in shown
    box.finder.result_box.children[0].children[1].click()  # Open
    assert box.conversation_id == with_key
    assert box.search("") == [] and box.error  # the server's 400: an empty query
    box.finder.clear_button.click()
    assert box.finder.result_box.children == () and box.finder.query.value == ""
    box.close()


def test_regenerate_replaces_the_last_reply(make_user: Callable[..., ChatClient]) -> None:
    for stream in (True, False):
        box = logged_in_box(make_user, stream=stream)
        assert box.regenerate_button.disabled  # nothing to regenerate yet
        box.send("say it again")
        first = box.messages[-1]
        assert not box.regenerate_button.disabled
        box.regenerate_button.click()
        assert box.error == "" and len(box.messages) == 2
        assert box.messages[-1]["content"] == "Echo: say it again"
        assert box.messages[-1]["id"] != first["id"]  # a new reply
        conversation = box.conversation_id
        assert conversation is not None
        stored = box.client.history(conversation)
        assert [m["content"] for m in stored] == [m["content"] for m in box.messages]
        assert stored[-1]["id"] == box.messages[-1]["id"]  # the old reply is gone
        box.close()


def test_edit_and_resend_the_last_message(make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.send("first question")
    box.send("a typo'd question")
    box.edit_button.click()
    assert box.input.value == "a typo'd question" and box.replies.editing
    assert box.cancel_edit_button.layout.display is None
    box.input._handle_custom_msg({"type": "submit", "text": "the right question"}, [])
    assert box.wait(30)
    assert box.transcript() == ("user: first question\nassistant: Echo: first question\n"
                                "user: the right question\nassistant: Echo: the right question")
    assert not box.replies.editing and box.cancel_edit_button.layout.display == "none"
    conversation = box.conversation_id
    assert conversation is not None
    assert len(box.client.history(conversation)) == 4  # replaced, not added
    # Cancelled, the next message is a new one.
    box.ask_edit()
    box.cancel_edit()
    assert box.input.value == ""
    box.send("a new one")
    assert len(box.messages) == 6
    box.close()


@pytest.mark.parametrize("stream", [True, False])
def test_temporary_chat_is_stored_nowhere(
        app: Flask, make_user: Callable[..., ChatClient], stream: bool) -> None:
    box = logged_in_box(make_user, stream=stream)
    box.send("a stored one")
    db = app.extensions["securechat.db"]
    conn = db.take()
    try:
        def rows() -> tuple[int, int, int]:
            return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
                         for t in ("conversations", "messages", "events"))
        before = rows()
        box.temporary_button.value = True
        assert box.temporary and box.messages == [] and box.conversation_id is None
        assert box.picker.disabled and box.regenerate_button.disabled
        assert "nothing is stored" in box.temporary_note.value
        box.send("my secret plan")
        box.send("and the second step")
        assert box.transcript() == ("user: my secret plan\nassistant: Echo: my secret plan\n"
                                    "user: and the second step\n"
                                    "assistant: Echo: and the second step")
        assert rows() == before  # no conversation, no message, no security event
        assert titles(box) == ["a stored one"]
        box.temporary_button.value = False  # leaving it forgets it
        assert not box.temporary and "a stored one" in box.transcript()
        assert "secret plan" not in box.transcript() and rows() == before
    finally:
        db.give(conn)
    box.close()


def test_a_temporary_message_that_failed_goes_back_to_the_input(
        server: BackgroundServer, make_user: Callable[..., ChatClient]) -> None:
    box = logged_in_box(make_user)
    box.set_temporary(True)
    server.stop()
    assert box.send("lost?") is None
    assert box.messages == [] and box.input.value == "lost?"
    box.close()


def test_export_and_import(make_user: Callable[..., ChatClient], tmp_path: Path) -> None:
    box = logged_in_box(make_user)
    box.send("export me")
    box.account_button.value = True
    assert "plain text" in box.history.warning.value
    box.history.export_path.value = str(tmp_path / "history.json")
    box.history.export_button.click()
    exported = json.loads((tmp_path / "history.json").read_text("utf-8"))
    assert [m["content"] for m in exported["conversations"][0]["messages"]] == [
        "export me", "Echo: export me"]
    assert "plain text" in box.history.note.value
    assert box.export(tmp_path / "history.md", "markdown") == tmp_path / "history.md"
    archive = box.export_archive(tmp_path / "backup.bin", "archive passphrase")
    assert archive is not None and b"export me" not in archive.read_bytes()
    other = logged_in_box(make_user)
    assert other.import_export(tmp_path / "history.json") == {"imported": 1, "messages": 2}
    assert titles(other) == ["export me"] and other.transcript().startswith("user: export me")
    other.account_button.value = True
    other.history.import_path.value = str(archive)
    other.history.import_passphrase.value = "archive passphrase"
    other.history.import_button.click()
    assert other.history.import_passphrase.value == ""  # not kept in the widget
    assert "Imported 1 conversations" in other.history.note.value
    assert len(titles(other)) == 2
    assert other.import_export(tmp_path / "backup.bin", "wrong passphrase") is None
    assert other.error
    box.close()
    other.close()


def test_close_leaves_no_search_result_or_temporary_chat_in_saved_widget_state(
        make_user: Callable[..., ChatClient],
        sent: list[tuple[str, str, dict[str, Any]]]) -> None:
    box = logged_in_box(make_user)
    box.send("a private stored plan")
    box.search("private")
    box.rename_button.click()  # the title, in the rename field
    box.set_temporary(True)
    box.send("a private temporary plan")
    saved = _saved_widget_state(sent)
    assert "<mark>private</mark>" in saved and "private temporary plan" in saved
    assert "a private stored plan" in saved
    box.close()
    assert "private" not in _saved_widget_state(sent)
