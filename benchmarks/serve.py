"""Servers in child processes (securechat's own ``serve`` command, or the floor) and their RSS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .report import REPO_ROOT

_URL_RE = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``SECURECHAT_*`` setting, plus ``extra``.

    The repository comes first on PYTHONPATH: children import the same securechat (and
    benchmarks) as this process, whatever checkout an editable install points at.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class ServeProcess:
    """Start a server command that prints ``... listening on http://127.0.0.1:PORT``.

    Stopped with SIGTERM (the clean path ``serve`` promises), killed only if it hangs.
    """

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                 start_timeout: float = 60.0) -> None:
        self.argv, self.cwd, self.env = list(argv), cwd, dict(env)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stopped_cleanly = False

    @classmethod
    def securechat(cls, instance: Path, cwd: Path, env: Mapping[str, str]) -> ServeProcess:
        """``python -m securechat serve`` on a free loopback port and this instance folder."""
        return cls([sys.executable, "-m", "securechat", "serve", "--host", "127.0.0.1",
                    "--port", "0", "--instance", str(instance)], cwd, env)

    @classmethod
    def floor(cls, cwd: Path, env: Mapping[str, str]) -> ServeProcess:
        """The plain echo app under the same WSGI server."""
        return cls([sys.executable, "-m", "benchmarks.floor", "--port", "0"], cwd, env)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServeProcess:
        """Launch and wait for the line that names the URL."""
        # The server's log goes to a file in the work folder, read only when it fails.
        self.log_path = self.cwd / f"server-{os.getpid()}-{id(self)}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, text=True,
                                         stdout=subprocess.PIPE, stderr=log)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        match = _URL_RE.search(line[0]) if line else None
        if match is None:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(self.argv)} did not start: {line!r}\n{tail}")
        self.url = match.group(1)
        return self

    def stop(self) -> None:
        """SIGTERM, wait, and record whether it said it stopped."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.stopped_cleanly = self.proc.returncode == 0 and "stopped" in (rest or "")

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
