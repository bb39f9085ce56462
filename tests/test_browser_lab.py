"""The ChatBox in real JupyterLab: run notebook 04, type in the box, press Enter, see the reply.

JupyterLab runs headless on 127.0.0.1 with a random token, on a copy of the notebook in a
temporary folder, with its own config/runtime/settings folders; it and its kernel are shut
down afterwards, and the repository's notebook is never touched.
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
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser_helpers import SLOW_MS, chromium, require_chromium, screenshot

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_chat.ipynb"
IDLE = re.compile(r"\| Idle$")


@dataclass
class Lab:
    """A running JupyterLab."""

    url: str
    token: str
    root: Path
    runtime: Path

    def api(self, method: str, path: str, body: object = None) -> bytes:
        """Call the Jupyter server's REST API (loopback only)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            return bytes(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _interactive_copy(source: Path, target: Path) -> None:
    """Copy the notebook without outputs and without its teardown cells.

    The teardown cells stop the chat server; here the box must stay usable so the browser
    can chat through it after "Run All Cells". The kernel is shut down afterwards instead.
    """
    notebook = json.loads(source.read_text("utf-8"))
    notebook["cells"] = [c for c in notebook["cells"]
                         if "teardown" not in c.get("metadata", {}).get("tags", [])]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook["metadata"].pop("widgets", None)
    target.write_text(json.dumps(notebook), "utf-8")


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


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on a temporary copy of notebook 04, stopped with its kernels afterwards."""
    require_chromium()
    root, config = tmp_path / "notebooks", tmp_path / "jupyter-config"
    root.mkdir()
    (config / "labconfig").mkdir(parents=True)
    # No "get Jupyter news?" pop-up over the notebook (and no network fetch for it).
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    _interactive_copy(NOTEBOOK, root / NOTEBOOK.name)
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
            server.api("POST", "/api/shutdown")  # shuts its kernels down too
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


def test_chat_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    # A session made first: JupyterLab then attaches to its kernel instead of asking which one.
    lab.api("POST", "/api/sessions", {"path": NOTEBOOK.name, "name": NOTEBOOK.name,
                                      "type": "notebook", "kernel": {"name": "python3"}})
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(SLOW_MS)
        page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?reset&token={lab.token}")
        expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible()
        expect(page.get_by_text(IDLE)).to_be_visible()

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        # The last code cell has run ("[n]:", not "[*]:"), and the kernel is idle again.
        last_prompt = page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt")
        expect(last_prompt).to_have_text(re.compile(r"\[\d+\]:"))
        expect(page.get_by_text(IDLE)).to_be_visible()
        box = page.locator("textarea.securechat-input")
        expect(box).to_be_enabled()

        box.scroll_into_view_if_needed()
        box.click()
        page.keyboard.insert_text('<img src=x onerror="window.pwned=1"> typed in the browser')
        page.keyboard.press("Shift+Enter")  # a new line in the box, not "run cell"
        page.keyboard.insert_text("second line")
        started = time.perf_counter()
        page.keyboard.press("Enter")
        reply = page.locator(".securechat-assistant").filter(has_text="typed in the browser")
        expect(reply).to_be_visible()
        elapsed = time.perf_counter() - started
        print(f"\n[jupyterlab] Enter to reply: {elapsed * 1000:.0f} ms")

        # Shown as characters, with the Shift+Enter line break kept (a <br> after escaping).
        assert reply.locator("p").inner_text() == (
            'Echo: <img src=x onerror="window.pwned=1"> typed in the browser\nsecond line')
        expect(page.locator(".securechat-user").filter(has_text="second line")).to_have_count(1)
        expect(box).to_have_value("")
        expect(box).to_be_enabled()
        assert page.locator(".securechat-msg img").count() == 0
        assert page.evaluate("() => window.pwned") is None

        # The Send button does the same as Enter.
        box.fill("**sent** with the button")
        page.locator("button.securechat-send").click()
        sent = page.locator(".securechat-assistant").filter(has_text="with the button")
        expect(sent.locator("strong")).to_have_text("sent")  # Markdown, rendered safely
        expect(box).to_have_value("")
        box.scroll_into_view_if_needed()
        screenshot(page, "jupyterlab.png", tmp_path)
        page.close()
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before
