"""One wall-clock deadline over an HTTP exchange with the AI backend, every read included.

A read timeout bounds each silence, not the whole: a backend that sends a keep-alive
comment every few seconds, or trickles its headers (or a TLS handshake) a byte at a time,
would hold a server thread for ever. :class:`Deadline` shuts the exchange's socket down
when the time is up, wherever the read is blocked; requests made through :func:`session`
register their sockets with the deadline active the moment the socket exists. (Name
resolution is the one step it cannot cut: it happens before there is a socket.)
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_ACTIVE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "securechat_deadline", default=None)


class Deadline:
    """A point in time after which every socket attached to it is shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._timer.name = "securechat-deadline"
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left (0 once expired)."""
        return 0.0 if self.expired else max(0.0, self._at - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it already has)."""
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        _shut(sock)

    @contextlib.contextmanager
    def connecting(self) -> Iterator[None]:
        """Attach the sockets that requests made through :func:`session` open meanwhile."""
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)  # closed by cancel(), once the call has ended
        for sock in sockets:
            _shut(sock)

    def cancel(self) -> None:
        """Stop the timer and close the call's sockets (a failed connect can leave one)."""
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


def _shut(sock: socket.socket) -> None:
    # shutdown(), not close(): it wakes a thread blocked in recv() on this socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close_opened(sock: Any, failure: BaseException) -> None:
    """Close what a failed connect opened: its socket, and a TLS wrapper left in its frames.

    Cut mid-tunnel, urllib3 still wraps the dead socket in TLS and raises without closing
    the wrapper; it would stay open for as long as the error is referenced.
    """
    found = [sock]
    tb = failure.__traceback__
    while tb is not None:
        found += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, socket.socket)]
        tb = tb.tb_next
    for each in found:
        if each is not None:
            with contextlib.suppress(OSError):
                each.close()


def _register(sock: Any) -> None:
    deadline = _ACTIVE.get()
    if deadline is not None and sock is not None:
        deadline.attach(sock)


# The socket is attached the moment it exists (a proxy's CONNECT tunnel or a TLS handshake
# trickled a byte at a time is cut too), and again once connected: wrapping it in TLS
# moves the file descriptor to a new socket object.

class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock

    def connect(self) -> None:
        try:
            super().connect()
        except BaseException as e:
            _close_opened(self.sock, e)
            raise
        _register(self.sock)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock

    def connect(self) -> None:
        try:
            super().connect()
        except BaseException as e:
            _close_opened(self.sock, e)
            raise
        _register(self.sock)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose connections (proxied ones too) register with the active deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def session(proxy: str | None = None) -> requests.Session:
    """A ``requests.Session`` that trusts nothing from the environment.

    No ``HTTP(S)_PROXY``, ``NO_PROXY`` or ``.netrc`` (``trust_env`` off): the bearer key
    goes only where the configuration says, through ``proxy`` when one is given.
    """
    http = requests.Session()
    http.trust_env = False
    adapter = _WatchedAdapter(max_retries=0)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    if proxy:
        http.proxies = {"http": proxy, "https": proxy}
    return http
