"""One wall-clock deadline over an HTTP exchange with the AI backend, every read included.

A read timeout bounds each silence, not the whole: a backend that sends a keep-alive
comment every few seconds, or trickles its headers a byte at a time, would hold a server
thread for ever. :class:`Deadline` shuts the exchange's socket down when the time is up,
wherever the read is blocked; requests made through :func:`session` register their
sockets with the deadline active at the moment they connect.
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
            if not self.expired:
                self._sockets.append(sock)
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
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def cancel(self) -> None:
        """Stop the timer; the sockets are left alone."""
        self._timer.cancel()
        self._timer.join()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


def _shut(sock: socket.socket) -> None:
    # shutdown(), not close(): it wakes a thread blocked in recv() on this socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _register(sock: Any) -> None:
    deadline = _ACTIVE.get()
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
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
