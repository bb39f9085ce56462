"""Section 11: many streams at once, SQLite against PostgreSQL, one process against two.

A fake OpenAI-compatible backend (its own gevent process, :mod:`benchmarks.fakebackend`)
streams every reply at ``1 / chunk_delay`` tokens a second. For each store and number of
`serve` processes: the backend alone, then through securechat, each with ``streams``
streams opened at up to ``rate`` a second by a gevent load generator in a third process
(:mod:`benchmarks.streamgen`), one user per stream. Time to first token is measured the
same way for both; the overhead is securechat's p99 minus the backend's, side by side.
Then send-message latency at a few client counts against the plain Flask floor, each
measured just before.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from securechat import ChatClient

from .inprocess import PASSWORD
from .loopback import LOAD_KDF, NO_RATE_LIMIT, _loadgen
from .report import Table
from .serve import ServeProcess, clean_env, memory_kib, reset_peak

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_OVERHEAD_MS, TARGET_SEND_RATIO = 100.0, 2.0
_MB = 1024 / 1e6  # KiB → MB
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class StreamsRun:
    """What section 11 measures, as tables and as numbers for the targets."""

    streams: Table
    send: Table
    capacity: Table
    metrics: dict[str, float] = field(default_factory=dict)


def raise_open_files() -> tuple[int, int]:
    """This process's open-files limit raised to its hard limit; (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def _serving_pids(server: ServeProcess) -> list[int]:
    """The processes that serve: `serve` itself, or the workers of its supervisor."""
    return _children(server.pid) or [server.pid]


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str | None]:
    """A fresh database on the PostgreSQL server (dropped afterwards); None without one."""
    try:
        import psycopg

        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL here
        yield None
        return
    name = f"securechat_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _streamgen(work: Path, url: str, targets: list[dict[str, Any]], kind: str, rate: float,
               timeout: float, health: bool) -> dict[str, Any]:
    path = work / f"targets-{kind}-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(targets), encoding="utf-8")
    argv = [sys.executable, "-m", "benchmarks.streamgen", "--url", url, "--targets",
            str(path), "--kind", kind, "--rate", str(rate), "--timeout", str(timeout)]
    done = subprocess.run(argv + (["--health"] if health else []), cwd=work,
                          env=clean_env(), capture_output=True, text=True,
                          timeout=len(targets) / rate + timeout + 120, check=False)
    path.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"stream generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _accounts(url: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """Register and log in each user, with a conversation; their stream targets."""

    def one(name: str) -> dict[str, Any]:
        with ChatClient(url, timeout=120) as client:
            client.register(name, PASSWORD)
            client.login(name, PASSWORD)
            conv = client.new_conversation("streams")["id"]
            cookie = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())
            return {"path": f"/api/conversations/{conv}/messages",
                    "body": {"content": "Tell me about privacy."},
                    "headers": {"Cookie": cookie, "X-CSRF-Token": client.csrf_token or ""}}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, names))


@dataclass
class Options:
    """Sizes of section 11."""

    streams: int = 1000
    rate: float = 100.0
    words: int = 300
    chunk_delay: float = 0.05
    stores: Sequence[str] = ("sqlite", "postgres")
    workers: Sequence[int] = (1, 2)
    send_clients: Sequence[int] = (4, 16)
    send_requests: int = 2000
    send_duration: float = 10.0
    postgres_admin_url: str = POSTGRES_ADMIN_URL
    timeout: float = 120.0


def many_streams(work: Path, opts: Options) -> StreamsRun:
    """Run section 11; return its two tables and the numbers the targets judge."""
    soft, hard = raise_open_files()
    run = StreamsRun(_streams_table(opts), _send_table(opts), _capacity_table())
    backend_argv = [sys.executable, "-m", "benchmarks.fakebackend", "--port", "0",
                    "--words", str(opts.words), "--chunk-delay", str(opts.chunk_delay)]
    limits: list[str] = []
    with ServeProcess(backend_argv, work, clean_env()) as backend:
        for store in opts.stores:
            admin = opts.postgres_admin_url if store == "postgres" else None
            with postgres_database(admin) if admin else contextlib.nullcontext(None) as db:
                if store == "postgres" and db is None:
                    run.streams.notes.append(f"PostgreSQL: no server at {admin}: skipped.")
                    continue
                _store_rows(work / f"streams-{store}", run, opts, backend, store, db,
                            limits)
        _beyond_capacity(work / "streams-capacity", run, opts, backend)
    run.streams.notes += [
        f"{opts.streams:,} streams, one user and one connection each, opened at up to "
        f"{opts.rate:g} a second from 127.0.0.2-127.0.0.101 (loopback; serve's default cap "
        "of 32 connections per address holds); each reply is "
        f"{opts.words} tokens at {1 / opts.chunk_delay:g} tokens/s from a fake "
        "OpenAI-compatible backend under gevent in its own process.",
        "Time to first token: from the connect to the first delta (securechat: `event: "
        "delta`; the backend alone: the first chunk with text), the same code measuring "
        "both; overhead = securechat's p99 − the backend alone's p99, measured just before "
        "on the same backend process at the same concurrency.",
        "CPU: seconds used during the securechat phase by serve (all workers), the fake "
        "backend and the load generator; on 2 cores the three share them, so a busy load "
        "generator or backend inflates securechat's numbers too.",
        f"Open-files limit: this process {soft} (hard {hard}), the load generator raises its "
        f"own to its hard limit; serve's own (from /proc): {', '.join(sorted(set(limits)))}.",
        "Settings: defaults (MAX_STREAMS 1500, MAX_CONNECTIONS 2000, "
        "MAX_CONNECTIONS_PER_ADDRESS 32, STREAM_COALESCE_WINDOW 0.01) except rate limiting "
        "off and Argon2id lowered to 64 KiB, 1 pass (set-up logins only).",
        "/api/health was probed every 0.25 s during each securechat phase.",
    ]
    return run


def _store_rows(instance: Path, run: StreamsRun, opts: Options, backend: ServeProcess,
                store: str, database: str | None, limits: list[str]) -> None:
    """Accounts once for this store, then each number of processes: streams and sends."""
    env = clean_env({**NO_RATE_LIMIT, **LOAD_KDF, "SECURECHAT_RESPONDER": "openai",
                     "SECURECHAT_OPENAI_BASE_URL": backend.url + "/v1",
                     "SECURECHAT_OPENAI_MODEL": "fake",
                     **({"SECURECHAT_DATABASE": database} if database else {})})
    echo_env = {k: v for k, v in env.items() if not k.startswith("SECURECHAT_OPENAI")
                and k != "SECURECHAT_RESPONDER"}
    names = [f"stream{i}" for i in range(max(opts.streams, max(opts.send_clients)))]
    with ServeProcess.securechat(instance, instance.parent, env) as setup:
        targets = _accounts(setup.url, names)
    alone = [{"path": "/v1/chat/completions",
              "body": {"model": "fake", "stream": True,
                       "messages": [{"role": "user", "content": "Tell me about privacy."}]}}
             ] * opts.streams
    for workers in opts.workers:
        server = ServeProcess.securechat(instance, instance.parent, env)
        server.argv += ["--workers", str(workers)]
        with server:
            pids = _serving_pids(server)
            limits.extend(_open_files_limit(p) for p in pids)
            base = _streamgen(instance.parent, backend.url, alone, "backend", opts.rate,
                              opts.timeout, False)
            for pid in pids:
                reset_peak(pid)
            before = {p: _cpu_s(p) for p in [*pids, backend.pid]}
            ours = _streamgen(instance.parent, server.url, targets[:opts.streams],
                              "securechat", opts.rate, opts.timeout, True)
            cpu = {p: _cpu_s(p) - before[p] for p in before}
            peak = sum(memory_kib(p)["VmHWM"] for p in pids) * _MB
        # Sends are timed against the echo responder, as section 2's are: the backend's
        # pace is not securechat's cost. The floor runs just before each row, on the
        # machine as it is then (as the backend alone does for the streams).
        sender = ServeProcess.securechat(instance, instance.parent, echo_env)
        sender.argv += ["--workers", str(workers)]
        with sender, ServeProcess.floor(instance.parent, clean_env()) as floor:
            sends = {c: (_loadgen(instance.parent, floor.url, c, opts.send_requests,
                                  opts.send_duration),
                         _loadgen(instance.parent, sender.url, c, opts.send_requests,
                                  opts.send_duration, names[:c])) for c in opts.send_clients}
        _add_stream_row(run, store, workers, base, ours, peak,
                        sum(cpu[p] for p in pids), cpu[backend.pid], server.stopped_cleanly)
        for c, (plain, sent) in sends.items():
            ratio = sent["p99_ms"] / plain["p99_ms"]
            run.send.add(_store_name(store), workers, c, plain["p50_ms"], plain["p99_ms"],
                         sent["p50_ms"], sent["p99_ms"], sent["errors"], ratio)
            run.metrics[f"send_ratio_{store}_{workers}_{c}"] = ratio


def _beyond_capacity(instance: Path, run: StreamsRun, opts: Options,
                     backend: ServeProcess) -> None:
    """Half again as many streams as MAX_STREAMS allows: 503 + Retry-After, at once."""
    cap = max(2, opts.streams // 10)
    env = clean_env({**NO_RATE_LIMIT, **LOAD_KDF, "SECURECHAT_RESPONDER": "openai",
                     "SECURECHAT_OPENAI_BASE_URL": backend.url + "/v1",
                     "SECURECHAT_OPENAI_MODEL": "fake", "SECURECHAT_MAX_STREAMS": str(cap)})
    with ServeProcess.securechat(instance, instance.parent, env) as server:
        targets = _accounts(server.url, [f"over{i}" for i in range(cap + cap // 2)])
        found = _streamgen(instance.parent, server.url, targets, "securechat", opts.rate,
                           opts.timeout, True)
    refused = sum(n for k, n in found["failures"].items() if k == "HTTP 503 + Retry-After")
    others = {k: n for k, n in found["failures"].items() if k != "HTTP 503 + Retry-After"}
    run.capacity.add(cap, found["streams"], found["completed"], refused, _kinds(others),
                     found["refused_max_ms"],
                     f"{found['health_failed']}/{found['health_probes']}",
                     found["health_max_ms"])
    run.metrics |= {"capacity_refused": float(refused),
                    "capacity_expected": float(found["streams"] - cap),
                    "capacity_other_failures": float(sum(others.values()) +
                                                     found["health_failed"])}


def _capacity_table() -> Table:
    table = Table("11c. Beyond capacity: more streams than MAX_STREAMS", [
        "MAX_STREAMS", "streams opened", "completed", "refused 503 + Retry-After",
        "other failures", "slowest refusal ms", "health failed/probes", "health max ms"])
    table.notes.append("SQLite, one process, MAX_STREAMS set to a tenth of the streams above; "
                       "the refusals are whole answers (503 with Retry-After), not hangs.")
    return table


def _store_name(store: str) -> str:
    return "PostgreSQL" if store == "postgres" else "SQLite"


def _add_stream_row(run: StreamsRun, store: str, workers: int, base: dict[str, Any],
                    ours: dict[str, Any], peak_mb: float, server_cpu: float,
                    backend_cpu: float, clean: bool) -> None:
    overhead = ours["ttft_p99_ms"] - base["ttft_p99_ms"]
    failures = sum(ours["failures"].values())
    run.streams.add(_store_name(store), workers, ours["streams"], ours["completed"],
                    _kinds(ours["failures"]), ours["most_open"], base["ttft_p50_ms"],
                    base["ttft_p99_ms"], ours["ttft_p50_ms"], ours["ttft_p99_ms"], overhead,
                    ours["deltas_per_stream"], peak_mb, server_cpu, backend_cpu,
                    ours["cpu_s"], f"{ours['health_failed']}/{ours['health_probes']}",
                    ours["health_max_ms"])
    if base["failures"]:
        run.streams.notes.append(f"{_store_name(store)}, {workers} process(es): the backend "
                                 f"alone failed {_kinds(base['failures'])}.")
    if not clean:
        run.streams.notes.append(f"{_store_name(store)}, {workers} process(es): serve did "
                                 "NOT stop cleanly on SIGTERM.")
    key = f"{store}_{workers}"
    run.metrics |= {f"streams_failures_{key}": float(failures + ours["health_failed"]),
                    f"streams_overhead_{key}": overhead, f"streams_rss_{key}": peak_mb}


def _kinds(failures: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(failures.items())) or "0"


def _streams_table(opts: Options) -> Table:
    return Table(f"11a. {opts.streams:,} concurrent streams through serve (gevent) vs the "
                 "backend alone", [
                     "store", "processes", "streams", "completed", "failures", "most open",
                     "backend TTFT p50 ms", "backend TTFT p99 ms", "TTFT p50 ms",
                     "TTFT p99 ms", "overhead p99 ms", "events/stream", "server peak RSS MB",
                     "CPU s serve", "CPU s backend", "CPU s load gen",
                     "health failed/probes", "health max ms"])


def _send_table(opts: Options) -> Table:
    table = Table("11b. Send message by store and processes vs the plain Flask floor", [
        "store", "processes", "clients", "floor p50 ms", "floor p99 ms", "p50 ms", "p99 ms",
        "errors", "p99 × floor"])
    table.notes.append(f"Each run: at most {opts.send_requests} requests or "
                       f"{opts.send_duration:g} s; JSON send with the echo responder, as in "
                       "section 2, on the instance (and database) the streams used. Floor: "
                       "the plain Flask JSON echo under gevent's WSGI server, run just "
                       "before each securechat row at the same concurrency, so both meet "
                       "the machine in the same state.")
    return table
