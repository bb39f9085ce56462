"""The real `python -m securechat serve` in a child process, for tests where the server matters.

Limits, headers, timeouts and shutdown behave differently under the production server
(proxy-header handling, threads, connection limits) than under Flask's test client; tests
of those run here.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")


def serve_env(**extra: str) -> dict[str, str]:
    """The test process's environment without SECURECHAT_*, plus cheap KDF and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update({"SECURECHAT_KDF_ARGON2_MEMORY_KIB": "64", "SECURECHAT_KDF_ARGON2_ITERATIONS": "1",
                "SECURECHAT_RATELIMIT_ENABLED": "false", **extra})
    return env


def read_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """One line of the process's stdout, or fail after ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError("no output from the server in time")
    return proc.stdout.readline()


def serve_command(instance: Path, *args: str) -> list[str]:
    """The command line of `serve` on a free loopback port."""
    return [sys.executable, "-m", "securechat", "serve", "--host", "127.0.0.1", "--port", "0",
            "--instance", str(instance), *args]


class Served:
    """A running `serve` process: its URL, port and pid; stopped by :meth:`stop`."""

    def __init__(self, instance: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.proc = subprocess.Popen(serve_command(instance, *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = read_line(self.proc)
        match = LISTENING.search(line)
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"unexpected first line: {line!r}\n{err}")
        self.url, self.port, self.pid = match.group(1), int(match.group(2)), self.proc.pid
        self.first_line = line

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``sig``, wait, and return (exit status, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        """End the process whatever its state (fixture teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def refused(instance: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `serve` expecting it not to start; return the finished process."""
    return subprocess.run(serve_command(instance), capture_output=True, text=True, env=env,
                          timeout=120)
