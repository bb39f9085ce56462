"""Section 8: what clients that stop reading cost the server, in memory (never on disk).

`serve` holds a response for a slow client in memory instead of spooling it to a temporary
file (which would put decrypted history on the disk); this measures that memory: the
server's RSS with 0, 1, 10 and 50 clients each stalled on the largest history page, and
the open files that are not sockets (which must stay the database's).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from securechat import ChatClient

from .report import Table
from .serve import ServeProcess, clean_env, memory_kib

PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark account
BODY = "é" * 31_000  # JSON escapes each as \u00e9: the largest pages per character
COUNTS = (1, 10, 50)


def _stalled(port: int, path: str, cookies: str, csrf: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookies}\r\n"
                 f"X-CSRF-Token: {csrf}\r\n\r\n".encode())
    return sock


def _files(pid: int) -> list[str]:
    names = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("/") and not target.startswith("/dev/"):
            names.append(Path(target.removesuffix(" (deleted)")).name)
    return sorted(set(names))


def slow_readers(work: Path, sends: int = 100, settle: float = 2.0,
                 extra_env: dict[str, str] | None = None) -> tuple[Table, dict[str, float]]:
    """RSS of `serve` with clients stalled on the largest page; bytes spooled (none)."""
    table = Table("8. Slow readers: server memory per stalled client, nothing on disk",
                  ["stalled clients", "server RSS (MB)", "MB per client", "page (MB)",
                   "open files besides sockets"])
    env = clean_env({"SECURECHAT_RATELIMIT_ENABLED": "false",
                     "SECURECHAT_KDF_ARGON2_MEMORY_KIB": "64",
                     "SECURECHAT_MAX_CONNECTIONS_PER_ADDRESS": "0", **(extra_env or {})})
    with ServeProcess.securechat(work / "slow-instance", work, env) as server, \
            ChatClient(server.url, timeout=120) as client:
        client.register("reader", PASSWORD)
        client.login("reader", PASSWORD)
        conv = client.new_conversation("long")["id"]
        for _ in range(sends):  # each send stores two messages: the page fills at 100
            client.send(conv, BODY)
        path = f"/api/conversations/{conv}/messages?limit=200"
        page = len(client.http.get(server.url + path, timeout=120).content)
        cookies = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())
        port = int(server.url.rsplit(":", 1)[1])
        time.sleep(settle)
        base = memory_kib(server.pid)["VmRSS"] / 1024
        table.add("0", f"{base:.1f}", "–", f"{page / 2**20:.2f}", ", ".join(_files(server.pid)))
        metrics = {"slow_page_mb": page / 2**20}
        for count in COUNTS:
            socks = [_stalled(port, path, cookies, client.csrf_token or "")
                     for _ in range(count)]
            time.sleep(settle)
            rss = memory_kib(server.pid)["VmRSS"] / 1024
            per = (rss - base) / count
            metrics[f"slow_per_client_mb_{count}"] = per
            table.add(str(count), f"{rss:.1f}", f"{per:.2f}", f"{page / 2**20:.2f}",
                      ", ".join(_files(server.pid)))
            for sock in socks:
                sock.close()
            time.sleep(settle)
    return table, metrics
