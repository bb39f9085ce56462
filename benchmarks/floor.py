"""The floor: a plain Flask endpoint that only echoes JSON, with nothing private about it.

``python -m benchmarks.floor --port 0`` serves it under waitress exactly as
``python -m securechat serve`` serves securechat, so the two compare fairly.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from flask import Flask, Response, jsonify, request


def create_floor_app() -> Flask:
    """A Flask app whose one route answers the JSON it was sent."""
    app = Flask("floor")

    @app.post("/echo")
    def echo() -> tuple[Response, int]:
        data = request.get_json()
        return jsonify(message=data, reply={"content": data.get("content")}), 201

    return app


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the floor app on loopback until SIGTERM; print the URL like securechat does."""
    from waitress import create_server

    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    server = create_server(create_floor_app(), host="127.0.0.1", port=args.port,
                           threads=args.threads, ident="floor")
    print(f"floor listening on http://127.0.0.1:{server.socket.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print("floor stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
