"""Command line: ``python -m securechat serve`` under a production WSGI server (waitress)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m securechat",
                                     description="securechat: private AI chat server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the app (waitress; never a debugger)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    serve.add_argument("--instance", default=None,
                       help="instance folder (secret key, database); or SECURECHAT_INSTANCE")
    serve.add_argument("--threads", type=int, default=8, help="worker threads")
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into the same clean path as Ctrl-C.
    raise KeyboardInterrupt


def serve(host: str, port: int, instance: str | None, threads: int = 8) -> int:
    """Build the app and serve it until Ctrl-C or SIGTERM; return the exit status."""
    from waitress import create_server

    from .app import create_app
    from .errors import ConfigError

    try:
        app = create_app(instance_path=instance)
    except ConfigError as e:
        print(f"securechat: refusing to start: {e}", file=sys.stderr)
        return 2
    # waitress buffers a whole body before the app sees it: keep that near the app's own
    # limit (bodies between the two still get the JSON 413 from the app).
    body_cap = max(4 * int(app.config["MAX_CONTENT_LENGTH"]), 8 * 1024 * 1024)
    server = create_server(app, host=host, port=port, threads=threads, ident="securechat",
                           max_request_body_size=body_cap)
    bound_port = server.socket.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"securechat listening on http://{shown}:{bound_port} (instance {app.instance_path})",
          flush=True)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    print("securechat stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m securechat`` and the ``securechat`` script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.instance, args.threads)
    return 2  # pragma: no cover - argparse already refused


if __name__ == "__main__":
    sys.exit(main())
