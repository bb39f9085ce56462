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
import signal
import socket
import sys
from collections.abc import Sequence


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
    import gevent
    from gevent.event import Event
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def handle(self) -> None:
            # As serve does: without it each small chunk waits for the reader's delayed ACK.
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

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
    server = WSGIServer(("127.0.0.1", args.port), fake.app, log=None,
                        spawn=Pool(args.max_connections), backlog=4096, handler_class=Handler)
    server.start()
    print(f"fake backend listening on http://127.0.0.1:{server.server_port}", flush=True)
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    stopping.wait()
    server.stop(timeout=5)
    print("fake backend stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
