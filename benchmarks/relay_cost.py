"""serve's CPU per relayed token: a small, repeatable measure for section 11's bottleneck.

``python -m benchmarks.relay_cost --streams 200 --words 300`` starts the fake backend
(:mod:`benchmarks.fakebackend`) and one ``serve`` (SQLite, the OpenAI responder pointed at
the backend), opens ``--streams`` streams through it with :mod:`benchmarks.streamgen`,
and prints serve's user + system CPU seconds during the streams (from ``/proc``) divided
by the tokens relayed. CPU per token is far steadier than latency on a shared machine.
``--profile PATH`` runs serve under cProfile and writes its stats there (slower: compare
profiles with each other, not with unprofiled runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .loopback import LOAD_KDF, NO_RATE_LIMIT
from .serve import ServeProcess, clean_env
from .streams import _accounts, _cpu_s, _streamgen, raise_open_files


def measure(work: Path, streams: int, words: int, chunk_delay: float, rate: float,
            window: str | None, profile: str | None) -> dict[str, float]:
    """Run the streams once; serve's CPU seconds, tokens relayed and µs per token."""
    raise_open_files()
    backend_argv = [sys.executable, "-m", "benchmarks.fakebackend", "--port", "0",
                    "--words", str(words), "--chunk-delay", str(chunk_delay)]
    with ServeProcess(backend_argv, work, clean_env()) as backend:
        env = clean_env({**NO_RATE_LIMIT, **LOAD_KDF, "SECURECHAT_RESPONDER": "openai",
                         "SECURECHAT_OPENAI_BASE_URL": backend.url + "/v1",
                         "SECURECHAT_OPENAI_MODEL": "fake",
                         **({"SECURECHAT_STREAM_COALESCE_WINDOW": window}
                            if window is not None else {})})
        instance = work / "relay"
        server = ServeProcess.securechat(instance, work, env)
        if profile:
            server.argv[1:3] = ["-m", "cProfile", "-o", profile, "-m", "securechat"]
        with server:
            targets = _accounts(server.url, [f"relay{i}" for i in range(streams)])
            before = _cpu_s(server.pid)
            found = _streamgen(work, server.url, targets, "securechat", rate, 120.0, False)
            cpu = _cpu_s(server.pid) - before
    tokens = found["completed"] * words
    return {"streams": found["streams"], "completed": found["completed"],
            "failures": sum(found["failures"].values()), "cpu_s": round(cpu, 2),
            "tokens": tokens, "events_per_stream": found["deltas_per_stream"],
            "ttft_p50_ms": found["ttft_p50_ms"], "ttft_p99_ms": found["ttft_p99_ms"],
            "us_per_token": round(cpu / tokens * 1e6, 1) if tokens else float("nan")}


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line of measures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_cost")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--window", help="STREAM_COALESCE_WINDOW (default: serve's)")
    parser.add_argument("--profile", help="write serve's cProfile stats to this path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relay-cost-") as tmp:
        found = measure(Path(tmp), args.streams, args.words, args.chunk_delay, args.rate,
                        args.window, args.profile and str(Path(args.profile).resolve()))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
