"""Load generator for many concurrent streams, run as its own process under gevent.

``python -m benchmarks.streamgen --url URL --targets FILE --rate 100`` opens one
connection per target (a JSON list of ``{"path", "body", "headers"}``), at most
``--rate`` new streams a second, each a POST asking for Server-Sent Events, and reads it
to its end. It prints one JSON object: time to first token per stream (p50, p99, max),
completed streams, failures by kind, deltas per stream, the most streams open at once,
``/api/health`` probed meanwhile (``--health``), and this process's own CPU time.

A first token is the first ``event: delta`` of securechat (``--kind securechat``) or the
first chunk with text of an OpenAI-style stream (``--kind backend``); a stream succeeds
when it ends with ``event: done`` or ``data: [DONE]``. Connections come from
``--sources`` loopback addresses (127.0.0.2, ...) in turn, as many users would.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .report import percentile

_FIRST = {"securechat": re.compile(rb"event: delta\n"),
          "backend": re.compile(rb'"delta": \{"content": "[^"]')}
_END = {"securechat": b"event: done\n", "backend": b"data: [DONE]"}
_ERROR = b"event: error\n"


class Stream:
    """One stream's outcome: when its first token came, how it ended."""

    def __init__(self) -> None:
        self.ttft: float | None = None
        self.total: float | None = None
        self.failure = ""
        self.deltas = 0


def _request(host: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            "Accept: text/event-stream", f"Content-Length: {len(data)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def run_stream(addr: tuple[str, int], source: str, target: dict[str, Any], kind: str,
               timeout: float, out: Stream, started: float) -> None:
    """Open, send and read one stream to its end; record into ``out``."""
    try:
        sock = socket.create_connection(addr, timeout=timeout, source_address=(source, 0))
    except OSError as e:
        out.failure = f"connect: {type(e).__name__}"
        return
    deadline = started + timeout
    try:
        sock.sendall(_request(f"{addr[0]}:{addr[1]}", target["path"], target["body"],
                              target.get("headers", {})))
        body = _read(sock, deadline, kind, out, started)
    except (OSError, TimeoutError) as e:
        out.failure = f"read: {type(e).__name__}"
        return
    finally:
        sock.close()
    if out.failure:
        return
    out.total = time.perf_counter() - started
    status = body[9:12]
    if status != b"200":
        out.failure = f"HTTP {status.decode('latin-1', 'replace')}" + (
            " + Retry-After" if b"\r\nretry-after:" in body.lower() else "")
    elif _ERROR in body:
        out.failure = "error event"
    elif _END[kind] not in body:
        out.failure = "ended early"
    out.deltas = body.count(b"event: delta\n") if kind == "securechat" else len(
        _FIRST[kind].findall(body))


def _read(sock: socket.socket, deadline: float, kind: str, out: Stream,
          started: float) -> bytes:
    """Read to the end of the response (the server closes it), noting the first token."""
    first = _FIRST[kind]
    chunks: list[bytes] = []
    tail = b""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            out.failure = "timeout"
            return b"".join(chunks)
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        if out.ttft is None:
            if first.search(tail + data):
                out.ttft = time.perf_counter() - started
            tail = (tail + data)[-64:]


def probe_health(addr: tuple[str, int], timeout: float) -> float | None:
    """Seconds a GET /api/health took, or None when it failed."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(addr, timeout=timeout) as sock:
            sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {addr[0]}\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = b""
            # Bounded: the server closes after the answer, and the whole must come in time.
            while (time.perf_counter() - t0 < timeout) and (chunk := sock.recv(65536)):
                data += chunk
    except OSError:
        return None
    return time.perf_counter() - t0 if data[9:12] == b"200" else None


def run(url: str, targets: list[dict[str, Any]], kind: str, rate: float, timeout: float,
        sources: int, health: bool) -> dict[str, Any]:
    """Open every stream at ``rate`` a second; return the summary."""
    import gevent

    parts = urlsplit(url)
    addr = (parts.hostname or "127.0.0.1", parts.port or 80)
    streams = [Stream() for _ in targets]
    open_now, most = [0], [0]
    probes: list[float | None] = []
    running = [True]

    def one(i: int) -> None:
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])
        try:
            run_stream(addr, f"127.0.0.{2 + i % sources}", targets[i], kind, timeout,
                       streams[i], time.perf_counter())
        finally:
            open_now[0] -= 1

    def prober() -> None:
        while running[0]:
            probes.append(probe_health(addr, 10.0))
            gevent.sleep(0.25)

    probe = gevent.spawn(prober) if health else None
    start = time.perf_counter()
    greenlets = []
    for i in range(len(targets)):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            gevent.sleep(wait)
        greenlets.append(gevent.spawn(one, i))
    opened = time.perf_counter() - start
    gevent.joinall(greenlets, timeout=timeout + 30)
    elapsed = time.perf_counter() - start
    running[0] = False
    if probe is not None:
        probe.join(15)
    ttft = [s.ttft * 1000 for s in streams if s.ttft is not None and not s.failure]
    failures = Counter(s.failure for s in streams if s.failure)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ok_probes = [p * 1000 for p in probes if p is not None]
    refused = [s.total * 1000 for s in streams
               if s.failure.startswith("HTTP 503") and s.total is not None]
    return {"streams": len(streams), "completed": len(streams) - sum(failures.values()),
            "failures": dict(failures), "ttft_p50_ms": percentile(ttft, 50),
            "ttft_p99_ms": percentile(ttft, 99), "ttft_max_ms": max(ttft, default=0.0),
            "deltas_per_stream": (sum(s.deltas for s in streams) / len(streams)
                                  if streams else 0.0),
            "most_open": most[0], "opened_s": opened, "elapsed_s": elapsed,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "health_probes": len(probes), "health_failed": len(probes) - len(ok_probes),
            "health_p99_ms": percentile(ok_probes, 99),
            "health_max_ms": max(ok_probes, default=0.0),
            "refused_max_ms": max(refused, default=0.0)}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, raise the open-files limit, run, print JSON."""
    from gevent import monkey

    monkey.patch_all()
    from .fakebackend import raise_open_files

    parser = argparse.ArgumentParser(prog="python -m benchmarks.streamgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--targets", required=True, help="JSON file: a list of targets")
    parser.add_argument("--kind", choices=sorted(_FIRST), default="securechat")
    parser.add_argument("--rate", type=float, default=100.0, help="new streams a second")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per stream")
    parser.add_argument("--sources", type=int, default=100,
                        help="loopback source addresses to spread connections over")
    parser.add_argument("--health", action="store_true", help="probe /api/health meanwhile")
    args = parser.parse_args(argv)
    if not 1 <= args.sources <= 250 or args.rate <= 0:
        parser.error("--sources must be 1-250 and --rate positive")
    with open(args.targets, encoding="utf-8") as f:
        targets = json.load(f)
    limit = raise_open_files()
    result = run(args.url, targets, args.kind, args.rate, args.timeout, args.sources,
                 args.health)
    result["open_files_limit"] = limit
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
