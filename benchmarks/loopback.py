"""Over loopback HTTP: load at several concurrencies, login round trips, and server memory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from securechat import ChatClient

from .history import USERNAME, HistoryRun
from .inprocess import PASSWORD, kdf_description, kdf_mib, kdf_time
from .report import Table
from .serve import ServeProcess, clean_env, memory_kib, reset_peak

# Allowed for the load part only: logins there are set-up, not measured.
LOAD_KDF = {"SECURECHAT_KDF_ARGON2_MEMORY_KIB": "64", "SECURECHAT_KDF_ARGON2_ITERATIONS": "1"}
NO_RATE_LIMIT = {"SECURECHAT_RATELIMIT_ENABLED": "false"}


def _loadgen(work: Path, url: str, clients: int, requests: int, duration: float,
             users: Sequence[str] = ()) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON summary."""
    argv = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--clients",
            str(clients), "--requests", str(requests), "--duration", str(duration)]
    argv += ["--users", ",".join(users), "--password", PASSWORD] if users else ["--floor"]
    done = subprocess.run(argv, cwd=work, env=clean_env(), capture_output=True, text=True,
                          timeout=duration + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def http_load(work: Path, levels: Sequence[int], requests: int,
              duration: float) -> tuple[Table, dict[str, float]]:
    """Throughput and latency of the floor and of securechat's send, 1..N clients."""
    with ServeProcess.floor(work, clean_env()) as floor:
        floors = {c: _loadgen(work, floor.url, c, requests, duration) for c in levels}
    env = clean_env({**NO_RATE_LIMIT, **LOAD_KDF})
    with ServeProcess.securechat(work / "load", work, env) as server:
        users = [f"load{i}" for i in range(max(levels))]
        with ChatClient(server.url) as setup:
            for name in users:
                setup.register(name, PASSWORD)
        ours = {c: _loadgen(work, server.url, c, requests, duration, users) for c in levels}
    table = Table("2. Loopback HTTP (gevent, both servers; load from a separate process)",
                  ["server", "clients", "completed", "errors", "requests/s", "p50 ms",
                   "p99 ms", "% of floor"])
    for name, results in (("plain Flask JSON echo (floor)", floors),
                          ("securechat send message", ours)):
        for c in levels:
            r = results[c]
            table.add(name, c, r["completed"], r["errors"], r["throughput"], r["p50_ms"],
                      r["p99_ms"], 100 * r["throughput"] / floors[c]["throughput"])
    table.notes += [
        f"Each row: at most {requests} requests or {duration:g} s, whichever ends first; "
        "each client is a thread with its own HTTP session (keep-alive), logged in before "
        "the clock starts; the server and the load generator share this machine's cores.",
        "securechat: `python -m securechat serve --host 127.0.0.1 --port 0 --instance <tmp>` "
        "with SECURECHAT_RATELIMIT_ENABLED=false and Argon2id lowered to 64 KiB, 1 pass "
        "(logins here are set-up only; the send route runs no KDF).",
        f"Stopped cleanly on SIGTERM: floor {_yes(floor.stopped_cleanly)}, securechat "
        f"{_yes(server.stopped_cleanly)}.",
    ]
    return table, {}


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def login_and_memory(work: Path, history: HistoryRun, reps: int, kdf_reps: int,
                     concurrent: int) -> tuple[Table, Table, dict[str, float]]:
    """Login at the default KDF cost, then the server's RSS paging the largest history."""
    kdf_mean, kdf_min = kdf_time(kdf_reps)
    with ServeProcess.securechat(history.instance, work, clean_env(NO_RATE_LIMIT)) as server:
        rss: dict[str, dict[str, int]] = {"idle": memory_kib(server.pid)}
        with ChatClient(server.url, timeout=300) as client:
            logins = _timed_logins(client, reps)
            rss["logins"] = memory_kib(server.pid)
            was_reset = reset_peak(server.pid)
            paged, paging_s = _page_everything(client, history.largest_conv)
            rss["paging"] = memory_kib(server.pid)
        reset_peak(server.pid)
        together = _concurrent_logins(server.url, concurrent)
        rss["concurrent"] = memory_kib(server.pid)
    if paged != history.largest_size:
        raise RuntimeError(f"paged {paged} messages, expected {history.largest_size}")
    login = Table("5. Login at the default KDF cost", ["operation", "mean ms", "min ms"])
    login.add(f"KDF alone: crypto.derive_kek, {kdf_description()}", kdf_mean * 1e3,
              kdf_min * 1e3)
    login.add("POST /api/login over loopback HTTP, one at a time",
              sum(logins) / len(logins) * 1e3, min(logins) * 1e3)
    login.add(f"POST /api/login, {concurrent} clients at once (latency of each)",
              sum(together) / len(together) * 1e3, min(together) * 1e3)
    login.notes.append(f"{kdf_reps} derivations in this process; {reps} logins after one "
                       "untimed, against `serve` with the default KDF (no SECURECHAT_KDF_* "
                       "set) and rate limiting off.")
    memory = _memory_table(history.largest_size, rss, was_reset, reps, concurrent)
    memory.notes += [
        f"Paged all {paged:,} messages, newest first, 200 per page, one client: "
        f"{paging_s:.1f} s ({paged / paging_s:,.0f} messages/s decrypted and served).",
        f"Each login at the default cost allocates the KDF's {kdf_mib()} MiB for its "
        "duration; concurrent ones add up to at most KDF_CONCURRENCY (default 2) runs at "
        "once, the other logins waiting their turn.",
        f"securechat stopped cleanly on SIGTERM: {_yes(server.stopped_cleanly)}.",
    ]
    return login, memory, {"rss_paging_mb": rss["paging"]["VmHWM"] * _MB,
                           "rss_login_mb": rss["logins"]["VmHWM"] * _MB,
                           "rss_concurrent_mb": rss["concurrent"]["VmHWM"] * _MB}


_MB = 1024 / 1e6  # KiB → MB (10^6 bytes), the unit of the target


def _memory_table(size: int, rss: dict[str, dict[str, int]], was_reset: bool, reps: int,
                  concurrent: int) -> Table:
    table = Table(f"6. Server memory with {size:,} messages in one conversation",
                  ["measurement", "MB"])
    # Without a reset each peak includes the earlier ones: say so rather than mislead.
    since = "VmHWM, reset before" if was_reset else "VmHWM since start: NOT reset"
    table.add("RSS when idle after start (VmRSS)", rss["idle"]["VmRSS"] * _MB)
    table.add(f"peak since start, {reps + 1} logins one at a time (VmHWM)",
              rss["logins"]["VmHWM"] * _MB)
    table.add(f"peak while paging the whole conversation ({since})",
              rss["paging"]["VmHWM"] * _MB)
    table.add("RSS after paging (VmRSS)", rss["paging"]["VmRSS"] * _MB)
    table.add(f"peak during {concurrent} concurrent logins ({since})",
              rss["concurrent"]["VmHWM"] * _MB)
    return table


def _concurrent_logins(url: str, n: int) -> list[float]:
    """Latency of each of ``n`` logins sent at the same moment by separate clients."""
    clients = [ChatClient(url, timeout=300) for _ in range(n)]
    ready = threading.Barrier(n)

    def login(client: ChatClient) -> float:
        ready.wait()
        start = time.perf_counter()
        client.login(USERNAME, PASSWORD)
        return time.perf_counter() - start

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(login, clients))
    finally:
        for client in clients:
            client.close()


def _timed_logins(client: ChatClient, reps: int) -> list[float]:
    client.login(USERNAME, PASSWORD)  # untimed: opens the connection
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        client.login(USERNAME, PASSWORD)
        times.append(time.perf_counter() - start)
    return times


def _page_everything(client: ChatClient, conv_id: str) -> tuple[int, float]:
    """Fetch every page of a conversation; return the message count and seconds taken."""
    count, before, start = 0, None, time.perf_counter()
    while True:
        page = client.history_page(conv_id, limit=200, before=before)
        count += len(page["messages"])
        before = page["next_before"]
        if before is None:
            return count, time.perf_counter() - start

