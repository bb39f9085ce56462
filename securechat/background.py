"""Run an app in a background thread on 127.0.0.1 (notebooks and tests)."""

from __future__ import annotations

import selectors
import socket
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .errors import SecureChatError


class _QuietHandler(WSGIRequestHandler):
    """No per-request log line (they would break notebook outputs); errors still logged."""

    # One request per connection: after stop() no keep-alive thread lingers.
    protocol_version = "HTTP/1.0"
    # A stalled client cannot hold a worker thread (and so stop()) forever.
    timeout = 60

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip the access log."""


class _KeepAliveHandler(_QuietHandler):
    """HTTP/1.1 with keep-alive and chunked streams, like real model servers speak."""

    protocol_version = "HTTP/1.1"


class _Server(ThreadedWSGIServer):
    # Non-daemon request threads, joined by server_close(): nothing outlives stop().
    daemon_threads = False
    block_on_close = True
    thread_name = "securechat-server"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # shutdown() writes a byte to this pair: the serving loop wakes at once, not on a timer.
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        try:
            super().__init__(*args, **kwargs)  # binds (werkzeug exits if the port is taken)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until shutdown(); ``select`` waits for a connection or the wake-up byte only."""
        # socketserver's own loop polls: it sees shutdown() only when its select() times out,
        # which cost every stop() up to poll_interval. Nothing is timed here.
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    ready = selector.select()
                    # A connection that raced shutdown() is not accepted: the port closes.
                    if self._stopping.is_set():
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        # socketserver's own step for one ready connection (accept, verify,
                        # process_request: a thread), as its serve_forever() calls it.
                        self._handle_request_noblock()  # type: ignore[attr-defined]
                    self.service_actions()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Make serve_forever() return now, and wait until it has."""
        self._stopping.set()
        self._wake_w.send(b"\0")
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the port, join the request threads, then close the wake-up pair."""
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one request in a thread named after the server (seen in leak checks)."""
        threading.current_thread().name = f"{self.thread_name}-request"
        super().process_request_thread(request, client_address)


def _shut_down(server: _Server, thread: threading.Thread,
               on_stop: Callable[[], object] | None) -> None:
    """Stop serving, join every thread of the server, close its port, then call ``on_stop``."""
    if threading.current_thread().name.startswith(server.thread_name):
        # Reached from one of the server's own threads (a garbage collection there):
        # it cannot join itself, so a helper thread does the work.
        threading.Thread(target=_shut_down, args=(server, thread, on_stop),
                         name="securechat-stopper").start()
        return
    server.shutdown()
    thread.join()
    server.server_close()  # joins the request threads still running (block_on_close)
    if on_stop is not None:
        on_stop()


class BackgroundServer:
    """Serve a WSGI app from a thread; ``url`` is known once :meth:`start` has bound the port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. A started server is
    also stopped when the object is garbage collected or the interpreter exits (a Jupyter
    kernel shutting down): its threads are joined and its port closed, then ``on_stop`` is
    called (e.g. ``TemporaryDirectory.cleanup`` to remove the instance folder it served).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 keep_alive: bool = False, name: str = "securechat-server",
                 on_stop: Callable[[], object] | None = None) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SecureChatError("BackgroundServer listens on loopback only; use "
                                  "`python -m securechat serve` to deploy")
        self.app = app
        self._host = host
        self._port = port
        self._handler = _KeepAliveHandler if keep_alive else _QuietHandler
        self._name = name
        self._on_stop = on_stop
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def port(self) -> int:
        """The bound port (a free one chosen by the OS unless given)."""
        if self._server is None:
            raise SecureChatError("server is not running")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundServer:
        """Bind (port 0 picks a free one) and serve in a thread."""
        if self._server is not None:
            raise SecureChatError("server already started")
        # Binding happens here, so the port is known before the thread runs.
        server = _Server(self._host, self._port, self.app, handler=self._handler)
        server.thread_name = f"{self._name}-{server.server_port}"
        # A daemon serving thread: at interpreter exit it cannot hold the process before
        # the finalizer below has stopped it properly.
        thread = threading.Thread(target=server.serve_forever, name=server.thread_name,
                                  daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        # The finalizer holds the server, not self: it runs once, from stop(), when self
        # is garbage collected, or at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _shut_down, server, thread, self._on_stop)
        return self

    def stop(self) -> None:
        """Stop serving, join the threads, close the port, call ``on_stop``. Safe twice."""
        finalizer = self._finalizer
        if finalizer is None:
            return
        self._server = self._thread = self._finalizer = None
        finalizer()

    def __enter__(self) -> BackgroundServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<BackgroundServer {state}>"
