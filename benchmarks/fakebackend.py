"""The fake OpenAI-compatible backend in a process of its own, under gevent: many streams.

``python -m benchmarks.fakebackend --port 0 --words 40 --chunk-delay 0.05`` serves
:class:`securechat.testing.FakeOpenAI`'s app (one greenlet per connection, no access
log, TCP_NODELAY as serve sets it), answering every request with the same ``--words``
words, one streamed chunk each ``--chunk-delay`` seconds (20 tokens/s by default). Its
own process, so its CPU time is measured apart from securechat's and the load generator's.
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence

from .geventserve import serve_until_signal


def reply_text(words: int) -> str:
    """The reply every stream gets: ``words`` numbered words."""
    return " ".join(f"token{i}" for i in range(words))


def raise_open_files() -> int:
    """Raise this process's open-files limit to its hard limit; return the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake backend on loopback until SIGTERM; print its URL."""
    from gevent import monkey

    monkey.patch_all()  # time.sleep between chunks waits in a greenlet, not a thread
    from gevent.pool import Pool

    from securechat.testing import FakeOpenAI

    parser = argparse.ArgumentParser(prog="python -m benchmarks.fakebackend")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--max-connections", type=int, default=4000)
    args = parser.parse_args(argv)
    raise_open_files()
    text = reply_text(args.words)
    fake = FakeOpenAI(lambda messages: text, chunk_delay=args.chunk_delay)
    serve_until_signal(fake.app, args.port, "fake backend",
                       spawn=Pool(args.max_connections), backlog=4096)
    return 0


if __name__ == "__main__":
    sys.exit(main())
