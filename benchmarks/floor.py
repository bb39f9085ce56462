"""The floor: a plain Flask endpoint that only echoes JSON, with nothing private about it.

``python -m benchmarks.floor --port 0`` serves it under gevent's WSGI server, as
``python -m securechat serve`` serves securechat (one greenlet per connection, no access
log, TCP_NODELAY), so the two compare fairly.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence

from flask import Flask, Response, jsonify, request


def create_floor_app() -> Flask:
    """A Flask app whose one route answers the JSON it was sent."""
    app = Flask("floor")

    @app.post("/echo")
    def echo() -> tuple[Response, int]:
        data = request.get_json()
        return jsonify(message=data, reply={"content": data.get("content")}), 201

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the floor app on loopback until SIGTERM; print the URL like securechat does."""
    # As serve does: before anything else, sockets and sleeps become cooperative.
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.event import Event
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def handle(self) -> None:
            # As serve does: gevent writes headers and body apart, and Nagle's algorithm
            # would hold the body for the client's delayed ACK (40 ms a keep-alive request).
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = WSGIServer(("127.0.0.1", args.port), create_floor_app(), log=None,
                        handler_class=Handler)
    server.start()
    print(f"floor listening on http://127.0.0.1:{server.server_port}", flush=True)
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    stopping.wait()
    server.stop(timeout=5)
    print("floor stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
