"""The command line: run the chosen sections, print each table, write RESULTS.md."""

from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import securechat

from . import (
    history,
    inprocess,
    keys,
    loopback,
    notebooks,
    portable,
    slow_readers,
    stream_sweep,
    streams,
)
from .report import REPO_ROOT, Table, command_line, document

SECTIONS = ("inprocess", "http", "history", "crypto", "login", "slow", "keys", "portable",
            "streams", "notebooks")
FULL = {"messages": "100,10000,100000", "requests": 3000, "clients": "1,4,16",
        "duration": 30.0, "page_reps": 200, "crypto_reps": 20000, "login_reps": 5,
        "streams": 1000}
QUICK = {"messages": "100,1000", "requests": 300, "clients": "1,4", "duration": 10.0,
         "page_reps": 30, "crypto_reps": 2000, "login_reps": 2, "streams": 100}
TARGET_PAGE, TARGET_RSS_MB = 2.0, 150.0
TARGET_SEARCH_MS = 1000.0


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parser() -> argparse.ArgumentParser:
    """The options; every size is one, ``--quick`` picks small defaults."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, for a fast look")
    p.add_argument("--messages", type=_ints, help=f"history sizes [{FULL['messages']}]")
    p.add_argument("--requests", type=int, help="requests per in-process case and per HTTP "
                   f"row [{FULL['requests']}]")
    p.add_argument("--clients", type=_ints, help=f"HTTP concurrencies [{FULL['clients']}]")
    p.add_argument("--duration", type=float, help="time cap per HTTP row, seconds "
                   f"[{FULL['duration']:g}]")
    p.add_argument("--page-reps", type=int, help=f"GETs per history row [{FULL['page_reps']}]")
    p.add_argument("--crypto-reps", type=int, help=f"calls per crypto row "
                   f"[{FULL['crypto_reps']}]")
    p.add_argument("--login-reps", type=int, help=f"KDF runs and logins "
                   f"[{FULL['login_reps']}]")
    p.add_argument("--login-concurrency", type=int, default=8,
                   help="logins sent at once for the memory peak [8]")
    p.add_argument("--slow-sends", type=int, default=100,
                   help="messages of 31,000 characters sent before the slow-reader section "
                   "(each stores two) [100: a full page]")
    p.add_argument("--streams", type=int, help="concurrent streams in section 11 "
                   f"[{FULL['streams']}]")
    p.add_argument("--stream-rate", type=float, default=100.0,
                   help="streams opened per second at most [100]")
    p.add_argument("--stream-words", type=int, default=300,
                   help="tokens per reply [300: 15 s, so every stream is open at once]")
    p.add_argument("--stream-delay", type=float, default=0.05,
                   help="seconds between the fake backend's tokens [0.05: 20 tokens/s]")
    p.add_argument("--stream-stores", default="sqlite,postgres",
                   help="stores for section 11 [sqlite,postgres]")
    p.add_argument("--stream-workers", type=_ints, default=[1, 2],
                   help="serve --workers values for section 11 [1,2]")
    p.add_argument("--stream-sweep", type=_ints, default=list(stream_sweep.LEVELS),
                   help="smaller stream counts of section 11d, SQLite "
                   f"[{','.join(map(str, stream_sweep.LEVELS))}]")
    p.add_argument("--send-clients", type=_ints, default=[4, 16],
                   help="send-message concurrencies of section 11 [4,16]")
    p.add_argument("--send-duration", type=float, default=10.0,
                   help="time cap per section 11 send row, seconds [10]")
    p.add_argument("--postgres", default=streams.POSTGRES_ADMIN_URL,
                   help="PostgreSQL server for section 11 (a database is created and "
                   f"dropped there) [{streams.POSTGRES_ADMIN_URL}]")
    p.add_argument("--notebooks", default="notebooks/*.ipynb",
                   help="glob of notebooks to execute, relative to the repository "
                   "[notebooks/*.ipynb]")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (login includes "
                   "memory and needs history)")
    p.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"),
                   help="where to write the results ('-' for nowhere)")
    p.add_argument("--profile", action="store_true",
                   help="also print a cProfile of the in-process send route to stderr")
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and fill unset sizes from the full or quick defaults."""
    args = parser().parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, _ints(value) if isinstance(value, str) else value)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser().error(f"unknown sections: {', '.join(sorted(unknown))}")
    if "login" in args.sections and "history" not in args.sections:
        args.sections.append("history")
    return args


def run(args: argparse.Namespace, work: Path) -> list[Table]:
    """Run the sections in an order that reuses the history instance; print each table."""
    tables: list[Table] = []
    metrics: dict[str, float] = {}

    def done(table: Table) -> None:
        tables.append(table)
        print(table.markdown(), flush=True)

    if "crypto" in args.sections:
        done(inprocess.crypto_per_message(args.crypto_reps))
    if "inprocess" in args.sections:
        table, found = inprocess.chat_round_trip(work, args.requests)
        metrics |= found
        done(table)
        if args.profile:
            _profile(work, args.requests)
    if "history" in args.sections:
        hist = history.history_pages(work, args.messages, args.page_reps)
        metrics |= {f"history_{page}": r for page, r in hist.ratios.items()}
        done(hist.table)
        if "login" in args.sections:
            login, memory, found = loopback.login_and_memory(
                work, hist, args.login_reps, args.login_reps, args.login_concurrency)
            metrics |= found | {"history_size": float(hist.largest_size)}
            done(login)
            done(memory)
    if "http" in args.sections:
        done(loopback.http_load(work, args.clients, args.requests, args.duration)[0])
    if "slow" in args.sections:
        table, found = slow_readers.slow_readers(work, args.slow_sends)
        metrics |= found
        done(table)
    if "keys" in args.sections:
        sizes = sorted({min(args.messages), max(args.messages)})
        change, metrics["rewrap_ratio"] = keys.password_change(work, sizes, args.login_reps)
        done(change)
        login, found = keys.login_by_kdf(work, args.login_reps, args.login_concurrency)
        metrics |= found
        done(login)
    if "portable" in args.sections:
        table, found = portable.portable(work, max(args.messages))
        metrics |= found
        done(table)
    if "streams" in args.sections:
        opts = streams.Options(
            streams=args.streams, rate=args.stream_rate, words=args.stream_words,
            chunk_delay=args.stream_delay, stores=_stores(args.stream_stores),
            workers=args.stream_workers, send_clients=args.send_clients,
            send_requests=args.requests, send_duration=args.send_duration,
            postgres_admin_url=args.postgres)
        found_streams = streams.many_streams(work, opts)
        metrics |= found_streams.metrics
        done(found_streams.streams)
        done(found_streams.send)
        done(found_streams.capacity)
        table, found = stream_sweep.sweep(work, opts, args.stream_sweep)
        metrics |= found
        done(table)
    if "notebooks" in args.sections:
        # An absolute pattern stays absolute when joined; a relative one is the repository's.
        found = glob.glob(str(REPO_ROOT / args.notebooks)) if args.notebooks else []
        paths = sorted(Path(p) for p in found)
        out = work / "executed-notebooks"
        out.mkdir()
        done(notebooks.run_notebooks(paths, out))
    tables.sort(key=_order)
    return [targets(metrics, args), *tables]


def _order(table: Table) -> tuple[int, str]:
    """Tables by section number (10 after 9), then by the rest of the title."""
    number = re.match(r"\d+", table.title)
    return (int(number.group()) if number else 0, table.title)


def _stores(text: str) -> list[str]:
    stores = [s for s in text.split(",") if s]
    if not stores or set(stores) - {"sqlite", "postgres"}:
        raise SystemExit("--stream-stores takes sqlite and/or postgres")
    return stores


def targets(metrics: dict[str, float], args: argparse.Namespace) -> Table:
    """The issue's targets against what was measured (only those that were)."""
    table = Table("Targets", ["target", "measured", "met"])
    # Section 1's ratio is no target (issue 15): it compared two durable commits with a
    # floor that does no I/O at all. Section 11 sets sends against the floor over HTTP.
    big, small = max(args.messages), min(args.messages)
    for page in ("newest", "middle"):
        if f"history_{page}" in metrics:
            r = metrics[f"history_{page}"]
            table.add(f"{page} page at {big:,} messages within {TARGET_PAGE:g}× of {small:,}",
                      f"{r:.2f}×", _yes(r <= TARGET_PAGE))
    for key, what in (("rss_paging_mb", "paging the whole conversation"),
                      ("rss_login_mb", "since start, logins one at a time included"),
                      ("rss_concurrent_mb", f"{args.login_concurrency} concurrent logins")):
        if key in metrics:
            table.add(f"server peak RSS < {TARGET_RSS_MB:g} MB with {big:,} messages, {what}",
                      f"{metrics[key]:.1f} MB", _yes(metrics[key] < TARGET_RSS_MB))
    if "login_peak_mb_0" in metrics:
        peak = metrics["login_peak_mb_0"]
        table.add(f"server peak RSS < {TARGET_RSS_MB:g} MB during {args.login_concurrency} "
                  "concurrent logins (Argon2id, default settings)", f"{peak:.1f} MB",
                  _yes(peak < TARGET_RSS_MB))
    if "export_json_rss_mb" in metrics:
        peak = max(metrics[f"export_{f}_rss_mb"] for f in ("json", "markdown", "archive"))
        table.add(f"server peak RSS < {TARGET_RSS_MB:g} MB exporting {big:,} messages "
                  "(any format)", f"{peak:.1f} MB", _yes(peak < TARGET_RSS_MB))
    if "search_max_ms" in metrics:
        slowest = metrics["search_max_ms"]
        table.add(f"every search request over {big:,} messages under "
                  f"{TARGET_SEARCH_MS:g} ms (bounded scan, no index)", f"{slowest:.0f} ms",
                  _yes(slowest < TARGET_SEARCH_MS))
    if "rewrap_ratio" in metrics:
        r = metrics["rewrap_ratio"]
        table.add(f"password change at {big:,} messages within {TARGET_PAGE:g}× of "
                  f"{small:,}", f"{r:.2f}×", _yes(r <= TARGET_PAGE))
    _stream_targets(table, metrics, args)
    return table


def _stream_targets(table: Table, metrics: dict[str, float], args: argparse.Namespace) -> None:
    """Section 11's targets, for each store and number of processes measured."""
    if "capacity_refused" in metrics:
        refused, expected = metrics["capacity_refused"], metrics["capacity_expected"]
        other = metrics["capacity_other_failures"]
        table.add("beyond MAX_STREAMS: 503 + Retry-After for each stream over, nothing else "
                  "fails, /api/health answers", f"{refused:.0f} of {expected:.0f} refused, "
                  f"{other:.0f} other failures", _yes(refused == expected and other == 0))
    for store in ("sqlite", "postgres"):
        for workers in args.stream_workers:
            key = f"{store}_{workers}"
            if f"streams_failures_{key}" not in metrics:
                continue
            where = (f"{'PostgreSQL' if store == 'postgres' else 'SQLite'}, {workers} "
                     f"process{'es' if workers > 1 else ''}")
            failed = metrics[f"streams_failures_{key}"]
            table.add(f"{args.streams:,} streams complete, no failure, /api/health always "
                      f"answers ({where})", f"{failed:.0f} failed",
                      _yes(failed == 0))
            overhead = metrics[f"streams_overhead_{key}"]
            table.add(f"time to first token overhead p99 ≤ {streams.TARGET_OVERHEAD_MS:g} ms "
                      f"over the backend alone ({where})", f"{overhead:.1f} ms",
                      _yes(overhead <= streams.TARGET_OVERHEAD_MS))
            for clients in args.send_clients:
                ratio = metrics[f"send_ratio_{key}_{clients}"]
                table.add(f"send message p99 at {clients} clients within "
                          f"{streams.TARGET_SEND_RATIO:g}× of the floor's ({where})",
                          f"{ratio:.2f}×", _yes(ratio <= streams.TARGET_SEND_RATIO))


def _loadavg() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _profile(work: Path, n: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    inprocess.chat_round_trip(work / "profile", n)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)


def intro(args: argparse.Namespace, seconds: float, ignored: Sequence[str],
          load_before: str = "unknown") -> list[str]:
    """The run's conditions, written above the tables."""
    lines = [
        f"Sizes: messages {args.messages}, {args.requests} requests per case/row, clients "
        f"{args.clients}, at most {args.duration:g} s per HTTP row; whole run {seconds:.0f} s.",
        "Every server listens on 127.0.0.1 only. Rate limiting is off "
        "(RATELIMIT_ENABLED=False, SECURECHAT_RATELIMIT_ENABLED=false) so it measures the "
        "code, not the limiter.",
        f"KDF: the default ({inprocess.kdf_description()}) for login and memory; lowered "
        "only where its logins are set-up and nothing timed derives a key (sections 1, 2, "
        "10, 11).",
        "The caller's SECURECHAT_* variables and .env file are ignored, so the defaults "
        "apply.",
        f"Load average (1, 5, 15 min) at the start: {load_before}; at the end: {_loadavg()}; "
        "other work on the machine during the run makes every number worse, fsync-bound and "
        "latency ones most.",
    ]
    if ignored:
        lines.append(f"Ignored from the environment: {', '.join(sorted(ignored))}.")
    measured = Path(securechat.__file__).resolve().parent
    if measured != REPO_ROOT / "securechat":
        lines.append(f"WARNING: this process imported securechat from {measured}, not from "
                     "this repository; the servers ran the repository's.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse(argv)
    ignored = [name for name in os.environ if name.startswith("SECURECHAT_")]
    for name in ignored:
        del os.environ[name]
    cwd, start, load_before = Path.cwd(), time.perf_counter(), _loadavg()
    with tempfile.TemporaryDirectory(prefix="securechat-bench-") as tmp:
        os.chdir(tmp)  # securechat reads a .env from the working folder: use an empty one
        try:
            tables = run(args, Path(tmp))
        finally:
            os.chdir(cwd)
    seconds = time.perf_counter() - start
    text = document(tables, command_line(), intro(args, seconds, ignored, load_before))
    print(tables[0].markdown())
    if args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"written to {args.output}")
    return 0
