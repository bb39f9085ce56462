"""The floor: a plain Flask endpoint that only echoes JSON, with nothing private about it.

``python -m benchmarks.floor --port 0`` serves it under gevent's WSGI server, as
``python -m securechat serve`` serves securechat (one greenlet per connection, no access
log, TCP_NODELAY), so the two compare fairly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flask import Flask, Response, jsonify, request

from .geventserve import serve_until_signal


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve_until_signal(create_floor_app(), args.port, "floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
