"""The ChatBox in real JupyterLab: the repository's notebook 04, Run All from the menu, then chat.

JupyterLab runs headless on 127.0.0.1 with a random token, serving the folder `make lab`
serves (the repository, read from the Makefile), with its own config, runtime and settings
folders. Autosave is off in those settings, so the notebook on disk is never written (its
hash is checked). JupyterLab and its kernel are shut down afterwards, and what the notebook
left running for the reader (its server, its temporary instance folder) must then be gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient
from playwright.sync_api import Locator, Page, expect

from tests.browser_helpers import SLOW_MS, chromium, require_chromium, screenshot
from tests.lab_helpers import NOTEBOOKS, make_lab_root

NOTEBOOK = NOTEBOOKS / "04_chat.ipynb"
IDLE = re.compile(r"\| Idle$")
PASSWORD = "correct horse battery staple"  # notebook 04's demo account  # noqa: S105


@dataclass
class Lab:
    """A running JupyterLab, and what must be gone once it has shut down."""

    url: str
    token: str
    root: Path
    runtime: Path
    must_vanish: list[Path] = field(default_factory=list)

    def api(self, method: str, path: str, body: object = None) -> bytes:
        """Call the Jupyter server's REST API (loopback only)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            return bytes(response.read())

    def run_in_kernel(self, kernel_id: str, code: str) -> str:
        """Run code in a notebook's kernel through a second client; return what it printed."""
        kc = BlockingKernelClient(connection_file=str(self.runtime / f"kernel-{kernel_id}.json"))
        kc.load_connection_file()
        kc.start_channels()
        printed: list[str] = []

        def collect(msg: dict[str, object]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream" and isinstance(content, dict):
                printed.append(str(content["text"]))

        try:
            reply = kc.execute_interactive(code, timeout=60, output_hook=collect)
        finally:
            kc.stop_channels()
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(printed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _our_processes(marker: str) -> list[int]:
    """Pids of processes whose command line names ``marker`` (our temporary folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _settings(folder: Path) -> None:
    """JupyterLab user settings: no autosave (the notebook on disk stays as committed)."""
    docmanager = folder / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on the repository (as `make lab` serves it), stopped with its kernels after."""
    require_chromium()
    root, config = make_lab_root(), tmp_path / "jupyter-config"
    (config / "labconfig").mkdir(parents=True)
    # No "get Jupyter news?" pop-up over the notebook (and no network fetch for it).
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    _settings(tmp_path / "settings")
    runtime = tmp_path / "jupyter-runtime"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(runtime),
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    port, token = _free_port(), secrets.token_hex(24)
    log = (tmp_path / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
         f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Lab(f"http://127.0.0.1:{port}", token, root, runtime)
    try:
        deadline = time.monotonic() + SLOW_MS / 1000
        while True:
            try:
                server.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.2)
        yield server
    finally:
        try:
            server.api("POST", "/api/shutdown")  # shuts its kernels down too (gracefully)
        except (urllib.error.URLError, ConnectionError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        # Kernels run in their own sessions; any left over (their connection file lives in
        # our runtime folder) is ended by its pid.
        leftovers = _our_processes(str(runtime))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert leftovers == [], "kernel processes outlived the Jupyter server"
        left = [str(p) for p in server.must_vanish if p.exists()]
        assert left == [], "the notebook's kernel shutdown left these behind"


# A reply that waits until the test opens the gate: typing while it is pending is checked
# without racing the clock.
_GATED = """
import os as _os, time as _time

class _Gated:
    def __init__(self, inner, gate):
        self.inner, self.gate = inner, gate

    def _wait(self):
        deadline = _time.monotonic() + 60
        while not _os.path.exists(self.gate) and _time.monotonic() < deadline:
            _time.sleep(0.05)

    def reply(self, history):
        self._wait()
        return self.inner.reply(history)

    def stream(self, history):
        self._wait()
        yield from self.inner.stream(history)

_echo = app.extensions["securechat.responder"]
app.extensions["securechat.responder"] = _Gated(_echo, {gate!r})
"""


def _run_all(page: Page) -> float:
    """Run → Run All Cells from the menu; return the seconds until the kernel is idle again."""
    started = time.perf_counter()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
    # The last code cell has run ("[n]:", not "[*]:"), and the kernel is idle again.
    last_prompt = page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt")
    expect(last_prompt).to_have_text(re.compile(r"\[\d+\]:"))
    expect(page.get_by_text(IDLE)).to_be_visible()
    return time.perf_counter() - started


def _chat_by_typing(page: Page, chat: Locator, tmp_path: Path) -> None:
    """Type an XSS payload with a Shift+Enter line break, press Enter, then use Send."""
    box = chat.locator("textarea.securechat-input")
    expect(box).to_be_enabled()
    box.scroll_into_view_if_needed()
    box.click()
    page.keyboard.insert_text('<img src=x onerror="window.pwned=1"> typed in the browser')
    page.keyboard.press("Shift+Enter")  # a new line in the box, not "run cell"
    page.keyboard.insert_text("second line")
    started = time.perf_counter()
    page.keyboard.press("Enter")
    reply = chat.locator(".securechat-assistant").filter(has_text="typed in the browser")
    expect(reply).to_be_visible()
    print(f"\n[jupyterlab] Enter to reply: {(time.perf_counter() - started) * 1000:.0f} ms")

    # Shown as characters, with the Shift+Enter line break kept (a <br> after escaping).
    assert reply.locator("p").inner_text() == (
        'Echo: <img src=x onerror="window.pwned=1"> typed in the browser\nsecond line')
    expect(chat.locator(".securechat-user").filter(has_text="second line")).to_have_count(1)
    expect(box).to_have_value("")
    expect(box).to_be_focused()
    assert chat.locator(".securechat-msg img").count() == 0
    assert page.evaluate("() => window.pwned") is None

    # The Send button does the same as Enter.
    box.fill("**sent** with the button")
    chat.locator("button.securechat-send").click()
    sent = chat.locator(".securechat-assistant").filter(has_text="with the button")
    expect(sent.locator("strong")).to_have_text("sent")  # Markdown, rendered safely
    expect(box).to_have_value("")
    box.scroll_into_view_if_needed()
    screenshot(page, "jupyterlab.png", tmp_path)


def _type_while_a_reply_is_pending(lab: Lab, kernel: str, page: Page, chat: Locator,
                                   tmp_path: Path) -> None:
    gate = tmp_path / "reply-gate"
    lab.run_in_kernel(kernel, _GATED.format(gate=str(gate)))
    box, send = chat.locator("textarea.securechat-input"), chat.locator("button.securechat-send")
    box.click()
    page.keyboard.insert_text("a slow question")
    page.keyboard.press("Enter")
    expect(send).to_be_disabled()  # the reply is pending...
    expect(box).to_be_editable()  # ...and the box still takes what is typed
    page.keyboard.insert_text("typed while waiting")
    page.keyboard.press("Enter")  # sending waits for the reply: nothing is sent, nothing lost
    expect(box).to_have_value("typed while waiting")
    gate.touch()
    expect(chat.locator(".securechat-assistant")
           .filter(has_text="Echo: a slow question")).to_be_visible()
    expect(send).to_be_enabled()
    expect(box).to_have_value("typed while waiting")  # the reply did not wipe it
    expect(chat.locator(".securechat-user")
           .filter(has_text="typed while waiting")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(chat.locator(".securechat-assistant")
           .filter(has_text="Echo: typed while waiting")).to_be_visible()
    expect(box).to_have_value("")
    lab.run_in_kernel(kernel, 'app.extensions["securechat.responder"] = _echo')


_HALF_THEN_GATED = """
class _HalfThenGated(_Gated):
    def stream(self, history):
        yield "First words "
        self._wait()
        yield "and the rest"

app.extensions["securechat.responder"] = _HalfThenGated(_echo, {gate!r})
"""


def _escape_stops_a_reply(lab: Lab, kernel: str, page: Page, chat: Locator,
                          tmp_path: Path) -> None:
    gate = tmp_path / "stop-gate"
    lab.run_in_kernel(kernel, _HALF_THEN_GATED.format(gate=str(gate)))
    box, stop = chat.locator("textarea.securechat-input"), chat.locator("button.securechat-stop")
    expect(stop).to_be_hidden()  # offered only while a reply streams in
    box.click()
    page.keyboard.insert_text("stop me")
    page.keyboard.press("Enter")
    reply = chat.locator(".securechat-assistant").filter(has_text="First words")
    expect(reply).to_be_visible()
    expect(stop).to_be_visible()
    expect(box).to_be_focused()
    page.keyboard.press("Escape")
    expect(reply).to_contain_text("cut short")  # what arrived stays, marked
    expect(stop).to_be_hidden()
    expect(chat.locator("button.securechat-send")).to_be_enabled()
    gate.touch()  # the backend's thread ends too
    lab.run_in_kernel(kernel, 'app.extensions["securechat.responder"] = _echo')
    expect(chat.locator(".securechat-assistant").filter(has_text="and the rest")).to_have_count(0)


def _copy_puts_the_message_on_the_clipboard(page: Page, chat: Locator) -> None:
    # The rows are in reverse order on the page (the newest first): the newest's Copy.
    chat.get_by_role("button", name="Copy", exact=True).first.click()
    expect(chat.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == "First words "


def _delete_asks_first(chat: Locator) -> None:
    chat.get_by_role("button", name="Delete", exact=True).first.click()
    question = chat.get_by_text(re.compile(r"and all its messages\?"))
    expect(question).to_be_visible()
    expect(question).to_contain_text("\u2018This is a second conversation.\u2019")
    chat.get_by_role("button", name="Cancel").click()
    expect(question).to_have_count(0)


def _focus_follows_what_the_person_clicked(chat: Locator) -> None:
    # A conversation picked in the dropdown: the cursor goes to the message box.
    chat.locator("select").select_option(label="Hello! What can you do?")
    expect(chat.locator(".securechat-user").filter(has_text="Hello! What can you do?")
           ).to_be_visible()
    expect(chat.locator("textarea.securechat-input")).to_be_focused()
    # Log out, log in again with the form: the cursor is in the message box again.
    chat.get_by_role("button", name="Log out").click()
    chat.get_by_placeholder("3-32 of").fill("ada")
    chat.get_by_placeholder("at least 8").fill(PASSWORD)
    chat.get_by_role("button", name="Log in").click()
    expect(chat.locator("textarea.securechat-input")).to_be_focused()


def test_chat_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    path = NOTEBOOK.relative_to(lab.root).as_posix()
    # A session made first: JupyterLab then attaches to its kernel instead of asking which one.
    session = json.loads(lab.api("POST", "/api/sessions", {
        "path": path, "name": NOTEBOOK.name, "type": "notebook", "kernel": {"name": "python3"}}))
    kernel = session["kernel"]["id"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
        page.set_default_timeout(SLOW_MS)
        page.goto(f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
        expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible()
        expect(page.get_by_text(IDLE)).to_be_visible()
        # Opening it did not change it: the tab shows no unsaved-changes mark.
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=NOTEBOOK.name)
        expect(tab).to_have_count(1)
        expect(tab).not_to_have_class(re.compile(r"\bjp-mod-dirty\b"))

        print(f"\n[jupyterlab] Run All Cells of {NOTEBOOK.name}: {_run_all(page):.1f} s")
        lab.must_vanish.append(Path(lab.run_in_kernel(kernel, "print(workdir.name)").strip()))
        # The notebook ends with the box, live and logged in.
        chat = page.locator(".jp-CodeCell").last.locator(".jp-OutputArea")
        expect(chat.get_by_text("Signed in as")).to_be_visible()

        _chat_by_typing(page, chat, tmp_path)
        _type_while_a_reply_is_pending(lab, kernel, page, chat, tmp_path)
        _escape_stops_a_reply(lab, kernel, page, chat, tmp_path)
        _copy_puts_the_message_on_the_clipboard(page, chat)
        _delete_asks_first(chat)
        _focus_follows_what_the_person_clicked(chat)
        assert page.evaluate("() => window.pwned") is None
        page.close()
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before
