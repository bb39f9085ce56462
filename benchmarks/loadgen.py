"""Load generator, run as its own process: N threads, each with its own HTTP session.

``python -m benchmarks.loadgen --url URL --clients N --requests R --duration S``
(``--users a,b,... --password P`` for securechat, ``--floor`` for the plain echo) prints
one JSON object: completed requests, errors, elapsed seconds, throughput, p50 and p99.
It runs in a separate process so the client's work does not share the server's GIL.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from securechat import ChatClient, SecureChatError

from .report import percentile

MESSAGE = "How private is this conversation, really? " * 2
Sender = Callable[[], None]


class _Budget:
    """A shared count of requests still allowed, and the deadline after which none are."""

    def __init__(self, requests_left: int, duration: float) -> None:
        self._left, self._lock = requests_left, threading.Lock()
        self._duration = duration
        self.deadline = float("inf")

    def start(self) -> None:
        """Open the budget: the deadline counts from now."""
        self.deadline = time.perf_counter() + self._duration

    def take(self) -> bool:
        """Claim one request; False when the count or the time is used up."""
        with self._lock:
            if self._left <= 0 or time.perf_counter() >= self.deadline:
                return False
            self._left -= 1
            return True


def _securechat_sender(url: str, username: str, password: str) -> tuple[Sender, Any]:
    client = ChatClient(url, timeout=60)
    client.login(username, password)
    conv_id = client.new_conversation("load")["id"]

    def send() -> None:
        client.send(conv_id, MESSAGE)

    return send, client


def _floor_sender(url: str) -> tuple[Sender, Any]:
    http = requests.Session()

    def send() -> None:
        response = http.post(url + "/echo", json={"content": MESSAGE}, timeout=60)
        response.raise_for_status()

    return send, http


def _worker(send: Sender, budget: _Budget, ready: threading.Barrier,
            latencies: list[float], errors: list[str]) -> None:
    ready.wait()
    while budget.take():
        t0 = time.perf_counter()
        try:
            send()
        except (SecureChatError, requests.RequestException) as e:
            errors.append(type(e).__name__)
            continue
        latencies.append(time.perf_counter() - t0)


def run_load(senders: Sequence[Sender], total: int, duration: float) -> dict[str, Any]:
    """Drive the senders concurrently, one thread each; return the summary."""
    budget = _Budget(total, duration)
    latencies: list[float] = []
    errors: list[str] = []
    ready = threading.Barrier(len(senders) + 1, action=budget.start)
    threads = [threading.Thread(target=_worker, args=(s, budget, ready, latencies, errors))
               for s in senders]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"clients": len(senders), "completed": len(ms), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "elapsed_s": elapsed,
            "throughput": len(ms) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, prepare every client (logins untimed), run, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--floor", action="store_true", help="target the plain echo app")
    parser.add_argument("--users", default="")
    parser.add_argument("--password", default="")
    args = parser.parse_args(argv)
    users = [u for u in args.users.split(",") if u]
    if not args.floor and len(users) < args.clients:
        parser.error("--users needs one account per client")
    made = [_floor_sender(args.url) if args.floor
            else _securechat_sender(args.url, users[i], args.password)
            for i in range(args.clients)]
    try:
        result = run_load([send for send, _ in made], args.requests, args.duration)
    finally:
        for _, closable in made:
            closable.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
