"""Section 10: your history, portable — export and search over a large history, under `serve`.

A user's history is filled with properly sealed rows (100 conversations when it is large
enough), then `serve` answers the export in each format (the client reads it to the end)
and search walks everything with a term found nowhere (the worst case: every message is
opened), page after page as a client follows ``next_before``. The server's peak RSS
(``VmHWM``, reset before each) shows whether an export holds the history in memory. One
more `serve` with an unbounded ``SEARCH_SCAN_LIMIT`` times a single request that opens
every message: what a search would cost without the bound, hence whether an index is
needed.
"""

from __future__ import annotations

import time
from pathlib import Path

from securechat import ChatClient

from .history import fill_conversation
from .inprocess import PASSWORD, _expect, logged_in, securechat_app
from .report import Table, percentile
from .serve import ServeProcess, clean_env, memory_kib, reset_peak

USERNAME = "portable"
CHEAP = {"KDF_ARGON2_MEMORY_KIB": 64, "KDF_ARGON2_ITERATIONS": 1}
NOWHERE = "zq-found-nowhere"
_MB = 1024 / 1e6  # KiB → MB


def fill(work: Path, size: int) -> Path:
    """An instance whose user has ``size`` messages over up to 100 conversations."""
    instance = work / "portable"
    app = securechat_app(instance, CHEAP)
    client, csrf = logged_in(app, USERNAME)
    count = max(1, min(100, size // 1000))
    for i in range(count):
        share = size // count + (1 if i < size % count else 0)
        conv = _expect(client.post("/api/conversations", json={"title": f"c{i}"},
                                   headers=csrf), 201).get_json()["id"]
        fill_conversation(app, USERNAME, PASSWORD, conv, share)
    app.extensions["securechat.db"].close()
    return instance


def _env(**extra: str) -> dict[str, str]:
    return clean_env({"SECURECHAT_RATELIMIT_ENABLED": "false",
                      "SECURECHAT_KDF_ARGON2_MEMORY_KIB": "64",
                      "SECURECHAT_KDF_ARGON2_ITERATIONS": "1", **extra})


def _timed_download(server: ServeProcess, client: ChatClient,
                    chunks_of: str) -> tuple[float, bytes, float]:
    """Seconds, the bytes, and the server's peak RSS (MB) for one download read to its end."""
    reset_peak(server.pid)
    start = time.perf_counter()
    if chunks_of == "archive":
        chunks = client._download("POST", "/api/export/archive",
                                  json={"passphrase": PASSWORD}, ending=b"")
    else:
        chunks = client.iter_export(chunks_of)
    data = b"".join(chunks)
    seconds = time.perf_counter() - start
    return seconds, data, memory_kib(server.pid)["VmHWM"] * _MB


def _timed_import(server: ServeProcess, data: bytes) -> tuple[float, float, int]:
    """Seconds and the server's peak RSS (MB) importing ``data`` into a new account."""
    with ChatClient(server.url, timeout=600) as other:
        other.register(USERNAME + "2", PASSWORD)
        other.login(USERNAME + "2", PASSWORD)
        reset_peak(server.pid)
        start = time.perf_counter()
        done = other.import_export(data)
        seconds = time.perf_counter() - start
    return seconds, memory_kib(server.pid)["VmHWM"] * _MB, done["messages"]


def _walk(server: ServeProcess, client: ChatClient, q: str,
          limit: int = 20) -> tuple[list[float], int, float]:
    """Every page of a search: seconds per request, results, and the server's peak RSS."""
    reset_peak(server.pid)
    times: list[float] = []
    found, before = 0, None
    while True:
        start = time.perf_counter()
        page = client.search(q, limit=limit, before=before)
        times.append(time.perf_counter() - start)
        found += len(page["results"])
        before = page["next_before"]
        if before is None:
            return times, found, memory_kib(server.pid)["VmHWM"] * _MB


def portable(work: Path, size: int) -> tuple[Table, dict[str, float]]:
    """Export (three formats), import, and search (bounded pages, then one unbounded request)."""
    start = time.perf_counter()
    instance = fill(work, size)
    filled = time.perf_counter() - start
    table = Table(f"10. Your history, portable: export and search over {size:,} messages "
                  "(`serve`)",
                  ["operation", "requests", "total s", "ms per request p50",
                   "ms per request max", "server peak RSS (MB)", "MB sent"])
    metrics: dict[str, float] = {}
    with ServeProcess.securechat(instance, work, _env()) as server, \
            ChatClient(server.url, timeout=600) as client:
        client.login(USERNAME, PASSWORD)
        client.search(NOWHERE)  # warm: the first request pays for imports and connections
        rest = memory_kib(server.pid)["VmRSS"] * _MB
        exports = {}
        for fmt in ("json", "markdown", "archive"):
            seconds, exports[fmt], peak = _timed_download(server, client, fmt)
            what = f"export, {fmt}" if fmt != "archive" else "export, encrypted archive"
            table.add(what, "1", seconds, "–", "–", peak, len(exports[fmt]) / 1e6)
            metrics[f"export_{fmt}_rss_mb"] = peak
        seconds, peak, imported = _timed_import(server, exports.pop("json"))
        if imported != size:
            raise RuntimeError(f"imported {imported} messages of {size}")
        table.add("import of the JSON export into another account", "1", seconds, "–", "–",
                  peak, "–")
        metrics["import_rss_mb"] = peak
        exports.clear()
        times, _, peak = _walk(server, client, NOWHERE)
        table.add("search found nowhere, every page (SEARCH_SCAN_LIMIT default)",
                  str(len(times)), sum(times), percentile(times, 50) * 1e3,
                  max(times) * 1e3, peak, "–")
        metrics["search_max_ms"] = max(times) * 1e3
        metrics["search_requests"] = float(len(times))
        start = time.perf_counter()
        hits = client.search("private")
        first = time.perf_counter() - start
        table.add("search found everywhere, first page of 20", "1", first, first * 1e3,
                  first * 1e3, "–", "–")
    with ServeProcess.securechat(instance, work,
                                 _env(SECURECHAT_SEARCH_SCAN_LIMIT="10000000")) as server, \
            ChatClient(server.url, timeout=600) as client:
        client.login(USERNAME, PASSWORD)
        times, _, peak = _walk(server, client, NOWHERE)
        table.add("search found nowhere, one unbounded request", str(len(times)), sum(times),
                  percentile(times, 50) * 1e3, max(times) * 1e3, peak, "–")
        metrics["search_unbounded_s"] = sum(times)
    if len(hits["results"]) != min(20, size):
        raise RuntimeError(f"search found {len(hits['results'])} of 20")
    table.notes += [
        f"Filled {size:,} sealed messages in {max(1, min(100, size // 1000))} conversations "
        f"in {filled:.0f} s (set-up, not timed above); the server's RSS after login and one "
        f"search: {rest:.1f} MB. The KDF is lowered (64 KiB): no timed row derives a key "
        "except the archive's, whose cost is the server's KDF setting.",
        "Peak RSS is VmHWM, reset before each row: what the row itself needed at most.",
        "Each export is read to its end by one client over loopback; the server reads 50 "
        "conversations and 200 messages at a time and writes as the client reads. The "
        "import sends the JSON export whole (it is held in memory, parsed and checked, then "
        "sealed and written 500 messages a transaction).",
        "Search opens at most SEARCH_SCAN_LIMIT (default 5,000) messages per request and "
        "answers a cursor: the rows above say whether a request of that size stays short, "
        "and what one request opening everything would cost instead.",
    ]
    return table, metrics
