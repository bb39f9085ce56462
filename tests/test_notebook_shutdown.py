"""Notebook 04 leaves its chat running; the kernel's shutdown still leaves nothing behind.

The notebook is executed as it is, in a real kernel (nbclient, as `make notebooks` does). The
kernel is then shut down the way JupyterLab does it (a shutdown request), and we check: the
temporary instance folder is gone, the port is closed, the kernel process has exited, and when
the interpreter finished no thread of the server was left.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.lab_helpers import NOTEBOOKS

NOTEBOOK = NOTEBOOKS / "04_chat.ipynb"

# Run before the notebook: a finalizer made first runs last at interpreter exit (after the
# server's), and reports which threads of securechat were still alive then.
_WATCH = """
import json as _json, sys as _sys, threading as _threading, weakref as _weakref

# IPython clears the user namespace at exit, before this runs: keep what it needs as defaults.
def _report(path={report!r}, json=_json, threading=_threading):
    with open(path, "w") as out:
        json.dump([t.name for t in threading.enumerate() if t.name.startswith("securechat")],
                  out)

_watch = _weakref.finalize(_sys, _report)
"""
# Run after the notebook: what to look for once the kernel is gone.
_PROBE = """
import json as _json, os as _os
print(_json.dumps({"workdir": workdir.name, "port": server.port, "pid": _os.getpid(),
                   "running": server.running, "logged_in": box.logged_in}))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return ""


def _processes_naming(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_notebook_04_leaves_nothing_after_its_kernel_shuts_down(tmp_path: Path) -> None:
    report = tmp_path / "threads-at-exit.json"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The notebook's own cells, unchanged, between a watcher and a probe of ours.
    nb.cells = [nbformat.v4.new_code_cell(_WATCH.format(report=str(report))), *nb.cells,
                nbformat.v4.new_code_cell(_PROBE)]
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            shutdown_kernel="graceful",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        connection_file = client.km.connection_file
        state = json.loads(nb.cells[-1].outputs[0]["text"])
        # The notebook ends as it promises: the server runs and the box is logged in.
        assert state["running"] and state["logged_in"]
        assert Path(state["workdir"]).is_dir() and _port_open(state["port"])
    # setup_kernel's exit sent the shutdown request and waited for the kernel to end.
    assert not _alive(state["pid"])
    assert _processes_naming(connection_file) == []
    assert not Path(state["workdir"]).exists(), "the temporary instance folder was left behind"
    assert not _port_open(state["port"])
    # Written by the kernel itself as its interpreter finished: it was not killed, and the
    # server's threads had been joined by then.
    assert json.loads(report.read_text()) == []
