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
    serve.add_argument("--threads", type=int, default=32,
                       help="worker threads (at least MAX_STREAMS + KDF_CONCURRENCY + "
                            "KDF_QUEUE + 4)")
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    # SIGINT and SIGTERM take the same clean path out of the server loop.
    raise KeyboardInterrupt


def serve(host: str, port: int, instance: str | None, threads: int = 32) -> int:
    """Build the app and serve it until Ctrl-C or SIGTERM; return the exit status."""
    from .errors import ConfigError
    from .server import create_app_from_env
    from .server.production import make_server, no_core_dumps

    no_core_dumps()  # before any key is in memory
    try:
        app = create_app_from_env(instance_path=instance)
        server = make_server(app, host, port, threads)
    except ConfigError as e:
        print(f"securechat: refusing to start: {e}", file=sys.stderr)
        return 2
    # Installed explicitly, and before anyone is told we listen: a process started with
    # SIGINT ignored (a script, nohup, some service managers) would never stop on Ctrl-C.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Inside the try: a signal right after this line must still stop cleanly.
        bound_port = server.getsockname()[1]  # numeric, as waitress itself shows it
        shown = f"[{host}]" if ":" in host else host
        print(f"securechat listening on http://{shown}:{bound_port} "
              f"(instance {app.instance_path})", flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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
