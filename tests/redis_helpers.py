"""A Redis for tests: where it is, a key prefix of its own per test, and a proxy that fails it.

Tests read the server from ``SECURECHAT_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). Each test writes under a fresh key prefix and deletes it
afterwards, so runs in parallel (other worktrees, other CI jobs) never collide. Without a
Redis the tests skip, saying why, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import redis

URL_VARIABLE = "SECURECHAT_TEST_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def reachable_redis_url() -> str:
    """The test Redis's URL once it answers; skip (or, under CI, fail) when it does not."""
    url = os.environ.get(URL_VARIABLE) or DEFAULT_URL
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as e:
        reason = f"no Redis answers at {URL_VARIABLE} ({urlsplit(url).netloc}): {e}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return url


def new_prefix() -> str:
    """A key prefix no other test uses."""
    return "sctest-" + uuid.uuid4().hex[:12]


def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (the test's own)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + ":*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def live_leases(where: str | redis.Redis, key: str) -> int:
    """How many unexpired leases the sorted set ``key`` holds (by Redis's clock).

    ``where`` is a URL, or a client to reuse (for a test that asks in a tight loop).
    """
    client = redis.Redis.from_url(where) if isinstance(where, str) else where
    try:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        return int(client.zcount(key, f"({now_ms}", "+inf"))
    finally:
        if client is not where:
            client.close()


class RedisProxy:
    """A TCP proxy to a Redis that a test can freeze (nothing answers) or cut (refused).

    ``url`` points at the proxy with the real URL's database; loopback only.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}{parts.path}"
        self._flowing = threading.Event()
        self._flowing.set()
        self._cut = False
        self.held_back = 0  # reads that arrived while frozen (a client is waiting on them)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        """Forward nothing more: every call waits for its answer until the client times out."""
        self._flowing.clear()

    def cut(self) -> None:
        """Close every connection and refuse new ones: Redis is down."""
        self._cut = True
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        """Forward again, and accept connections again."""
        self._cut = False
        self._flowing.set()

    def close(self) -> None:
        """Stop the proxy and join its threads."""
        self.cut()
        self._flowing.set()
        _close(self._listener)
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._cut:
                _close(client)
                continue
            upstream = socket.create_connection(self._upstream, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._flowing.is_set():
                    with self._lock:
                        self.held_back += 1
                self._flowing.wait()  # frozen: what arrived is held back, unanswered
                if self._cut:
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it
    except OSError:
        pass
    sock.close()
