"""Section 11d: from 8 concurrent streams up, where one and two serve processes reach their knee.

Section 11a runs the full count once per store; this sweep runs SQLite at smaller counts,
each against the backend alone at the same concurrency just before, and reports serve's
CPU per relayed token: the number that says how many streams a core can carry.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .loopback import LOAD_KDF, NO_RATE_LIMIT
from .report import Table
from .serve import ServeProcess, clean_env, memory_kib, reset_peak
from .streams import (
    TARGET_OVERHEAD_MS,
    Options,
    _accounts,
    _cpu_s,
    _kinds,
    _serving_pids,
    _streamgen,
)

LEVELS = (8, 32, 128, 256, 512)
_MB = 1024 / 1e6  # KiB → MB


def sweep(work: Path, opts: Options,
          levels: Sequence[int] = LEVELS) -> tuple[Table, dict[str, float]]:
    """Each of ``levels`` (those below ``opts.streams``) for each number of processes."""
    levels = sorted(n for n in set(levels) if n < opts.streams)
    table = _table(opts)
    metrics: dict[str, float] = {}
    if not levels:
        table.notes.append(f"No level below {opts.streams:,} streams was asked for.")
        return table, metrics
    backend_argv = [sys.executable, "-m", "benchmarks.fakebackend", "--port", "0",
                    "--words", str(opts.words), "--chunk-delay", str(opts.chunk_delay)]
    with ServeProcess(backend_argv, work, clean_env()) as backend:
        _levels(work / "streams-sweep", opts, backend, levels, table, metrics)
    return table, metrics


def _levels(instance: Path, opts: Options, backend: ServeProcess, levels: Sequence[int],
            table: Table, metrics: dict[str, float]) -> None:
    env = clean_env({**NO_RATE_LIMIT, **LOAD_KDF, "SECURECHAT_RESPONDER": "openai",
                     "SECURECHAT_OPENAI_BASE_URL": backend.url + "/v1",
                     "SECURECHAT_OPENAI_MODEL": "fake"})
    with ServeProcess.securechat(instance, instance.parent, env) as setup:
        targets = _accounts(setup.url, [f"sweep{i}" for i in range(max(levels))])
    alone = [{"path": "/v1/chat/completions",
              "body": {"model": "fake", "stream": True,
                       "messages": [{"role": "user", "content": "Tell me about privacy."}]}}]
    for workers in opts.workers:
        server = ServeProcess.securechat(instance, instance.parent, env)
        server.argv += ["--workers", str(workers)]
        with server:
            pids = _serving_pids(server)
            for n in levels:
                base = _streamgen(instance.parent, backend.url, alone * n, "backend",
                                  opts.rate, opts.timeout, False)
                for pid in pids:
                    reset_peak(pid)
                before = sum(_cpu_s(p) for p in pids)
                ours = _streamgen(instance.parent, server.url, targets[:n], "securechat",
                                  opts.rate, opts.timeout, False)
                cpu = sum(_cpu_s(p) for p in pids) - before
                peak = sum(memory_kib(p)["VmHWM"] for p in pids) * _MB
                _add(table, metrics, workers, n, base, ours, cpu, peak, opts.words)


def _add(table: Table, metrics: dict[str, float], workers: int, n: int, base: dict[str, Any],
         ours: dict[str, Any], cpu: float, peak: float, words: int) -> None:
    overhead = ours["ttft_p99_ms"] - base["ttft_p99_ms"]
    tokens = ours["completed"] * words
    table.add(workers, n, ours["completed"], _kinds(ours["failures"]), base["ttft_p99_ms"],
              ours["ttft_p50_ms"], ours["ttft_p99_ms"], overhead,
              "yes" if overhead <= TARGET_OVERHEAD_MS and not ours["failures"] else "**no**",
              cpu, cpu / tokens * 1e6 if tokens else float("nan"), peak)
    metrics[f"sweep_overhead_{workers}_{n}"] = overhead


def _table(opts: Options) -> Table:
    table = Table("11d. Concurrent streams from 8 up (SQLite) vs the backend alone", [
        "processes", "streams", "completed", "failures", "backend TTFT p99 ms",
        "TTFT p50 ms", "TTFT p99 ms", "overhead p99 ms",
        f"overhead ≤ {TARGET_OVERHEAD_MS:g} ms", "CPU s serve", "serve CPU µs per token",
        "server peak RSS MB"])
    table.notes += [
        f"As 11a ({opts.words} tokens at {1 / opts.chunk_delay:g} tokens/s per stream, opened "
        f"at up to {opts.rate:g} a second), at fewer streams; 11a is the {opts.streams:,} row.",
        "serve CPU µs per token: serve's user + system CPU during the securechat phase over "
        "the tokens it relayed (all processes together).",
    ]
    return table

