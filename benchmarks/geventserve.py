"""A benchmark server under gevent, as ``serve`` runs securechat: one greenlet a connection.

The floor and the fake backend share it, so both meet their clients as securechat does:
no access log, TCP_NODELAY (gevent writes headers and body apart, and Nagle's algorithm
would hold each small write for the client's delayed ACK, 40 ms), and a clean stop on
SIGTERM or SIGINT. Call :func:`serve_until_signal` after ``gevent.monkey.patch_all()``.
"""

from __future__ import annotations

import socket
from typing import Any


def serve_until_signal(app: Any, port: int, name: str, **options: Any) -> None:
    """Serve ``app`` on 127.0.0.1:``port``, print ``<name> listening on URL``, stop on SIGTERM."""
    import signal

    import gevent
    from gevent.event import Event
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def handle(self) -> None:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

    server = WSGIServer(("127.0.0.1", port), app, log=None, handler_class=Handler, **options)
    server.start()
    print(f"{name} listening on http://127.0.0.1:{server.server_port}", flush=True)
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    stopping.wait()
    server.stop(timeout=5)
    print(f"{name} stopped", flush=True)
