"""Command line: ``python -m securechat serve`` runs the production server (gevent).

``serve`` validates the settings and migrates the database once, binds its port, then
serves from this process or from ``--workers`` forked processes sharing that port. Ctrl-C
and SIGTERM stop it cleanly (streams in progress get a few seconds to finish).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

# Streams in progress get this long to finish when the server is stopped.
GRACE = 5.0
# Longest wait before a worker that keeps dying at start is started again (seconds).
RESTART_PAUSE_MAX = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m securechat",
                                     description="securechat: private AI chat server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the app (gevent; never a debugger)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    serve.add_argument("--instance", default=None,
                       help="instance folder (secret key, database); or SECURECHAT_INSTANCE")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes serving the port (share limits through Redis)")
    # How a supervisor hands its bound port to the workers it starts.
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    audit = sub.add_parser("audit", help="check the security logs (same settings as serve)")
    audit.add_argument("action", choices=["verify"], help="verify every account's chain")
    audit.add_argument("--instance", default=None,
                       help="instance folder; or SECURECHAT_INSTANCE")
    return parser


def audit_verify(instance: str | None) -> int:
    """Verify every security-log chain: 0 when all hold, 1 when one does not, 2 if unusable."""
    from .audit import verify
    from .errors import ConfigError
    from .server import create_app_from_env

    try:
        app = create_app_from_env(instance_path=instance)
    except ConfigError as e:
        print(f"securechat: cannot audit: {e}", file=sys.stderr)
        return 2
    accounts, events, problems = verify(app)
    for problem in problems:
        print(f"securechat audit: {problem}")
    print(f"securechat audit: {_count(accounts, 'account')}, {_count(events, 'event')}, "
          f"{_count(len(problems), 'problem')}", flush=True)
    return 1 if problems else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def serve(host: str, port: int, instance: str | None, workers: int = 1,
          listen_fd: int | None = None) -> int:
    """Build the app and serve it until Ctrl-C or SIGTERM; return the exit status.

    With ``workers`` > 1 this process checks the settings, migrates, binds the port and
    supervises that many fresh ``serve`` processes sharing it (``listen_fd``).
    """
    if workers < 1:
        print("securechat: refusing to start: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        return _supervisor(host, port, instance, workers)
    # Before anything else is imported: sockets, threads and sleeps become cooperative.
    from gevent import monkey

    monkey.patch_all()

    from .errors import ConfigError
    from .server import create_app_from_env
    from .server.process import no_core_dumps, unmap_large_allocations
    from .server.production import make_server
    from .server.sockets import listen

    no_core_dumps()  # before any key is in memory
    unmap_large_allocations()  # each login's KDF memory goes back to the system after it
    try:
        app = create_app_from_env(instance_path=instance)
        listener = listen(host, port) if listen_fd is None else _inherited(listen_fd)
    except (ConfigError, OSError) as e:
        print(f"securechat: refusing to start: {e}", file=sys.stderr)
        return 2
    # Installed explicitly, before anyone is told we listen: a process started with SIGINT
    # ignored (a script, nohup, some service managers) must still stop on Ctrl-C. A worker
    # stops when its supervisor says so (a terminal's Ctrl-C reaches every process).
    if listen_fd is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = _stop_event((signal.SIGTERM,) if listen_fd is not None else
                       (signal.SIGINT, signal.SIGTERM))
    if listen_fd is None:
        _say_listening(host, listener.getsockname()[1], app.instance_path, 1)
    _run(make_server(app, listener), stop)
    if listen_fd is None:
        print("securechat stopped", flush=True)
    return 0


def _inherited(fd: int) -> Any:
    import socket

    return socket.socket(fileno=fd)


def _say_listening(host: str, port: int, instance: str, workers: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"securechat listening on http://{shown}:{port} (instance {instance}, {workers} "
          f"worker{'s' if workers > 1 else ''})", flush=True)


def _supervisor(host: str, port: int, instance: str | None, workers: int) -> int:
    """Check and migrate once, bind the port, then run and watch ``workers`` processes."""
    from .errors import ConfigError
    from .server import create_app_from_env
    from .server.process import no_core_dumps
    from .server.sockets import listen

    no_core_dumps()
    try:
        app = create_app_from_env(instance_path=instance)  # settings checked, db migrated
        listener = listen(host, port)
    except (ConfigError, OSError) as e:
        print(f"securechat: refusing to start: {e}", file=sys.stderr)
        return 2
    fd = listener.fileno()
    argv = [sys.executable, "-m", "securechat", "serve", "--instance", app.instance_path,
            "--listen-fd", str(fd)]
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    def start() -> subprocess.Popen[bytes]:
        # Our own interpreter and module, with arguments built here: nothing from outside.
        return subprocess.Popen(argv, pass_fds=(fd,))  # noqa: S603
    procs = [start() for _ in range(workers)]
    born = [time.monotonic()] * workers
    due: list[float | None] = [None] * workers  # when a dead worker is started again
    pause = [0.0] * workers
    _say_listening(host, listener.getsockname()[1], app.instance_path, workers)
    while not stopping:
        now = time.monotonic()
        for i, proc in enumerate(procs):
            if due[i] is None:
                if proc.poll() is None:
                    continue
                # One that ran a while is replaced at once; one that dies as it starts
                # (Redis or the database down) waits longer each time, not a tight loop.
                pause[i] = (0.0 if now - born[i] > 10
                            else min(max(0.5, 2 * pause[i]), RESTART_PAUSE_MAX))
                due[i] = now + pause[i]
                print(f"securechat: worker {proc.pid} ended ({proc.returncode}); starting "
                      f"another{f' in {pause[i]:g} s' if pause[i] else ''}",
                      file=sys.stderr, flush=True)
            when = due[i]
            if when is not None and now >= when:
                procs[i], born[i], due[i] = start(), now, None
        time.sleep(0.2)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(GRACE + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    listener.close()
    print("securechat stopped", flush=True)
    return 0


def _stop_event(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Any:
    """An event set by any of ``signals`` (handled on the event loop, not mid-statement)."""
    import gevent
    import gevent.event

    event = gevent.event.Event()
    for sig in signals:
        gevent.signal_handler(sig, event.set)
    return event


def _run(server: Any, stop: Any) -> None:
    """Serve until ``stop`` is set, then stop accepting and let streams finish."""
    from .server import maintenance

    server.start()
    sweeping = maintenance.every_interval(server.application)  # an idle server sweeps too
    stop.wait()
    sweeping()
    server.stop(timeout=GRACE)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m securechat`` and the ``securechat`` script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.instance, args.workers, args.listen_fd)
    if args.command == "audit":
        return audit_verify(args.instance)
    return 2  # pragma: no cover - argparse already refused


if __name__ == "__main__":
    sys.exit(main())
