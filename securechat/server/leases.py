"""Slots per key (per user, per username) held as leases: in this process, or in Redis.

A cap that must hold across every ``serve`` process (replies in progress per user, one
login per username at a time) is counted where they all look: Redis, when
``RATELIMIT_STORAGE_URI`` names one, as leases that expire unless renewed
(:mod:`securechat.server.redis_leases`). With ``memory://`` the same interface counts in
the process (:class:`PerKey`), as one process needs. This module picks one for the app.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol
from urllib.parse import urlsplit

from flask import Flask

from .redis_leases import RedisLeases, connect

REDIS_SCHEMES = ("redis", "rediss", "redis+unix")


class Lease(Protocol):
    """A slot held; :meth:`release` gives it back (once, never raising)."""

    def release(self) -> None:
        """Give the slot back."""


class PerKeyCap(Protocol):
    """At most ``size`` holders per key; never waits."""

    size: int

    def acquire(self, key: str) -> Lease | None:
        """A lease on one of ``key``'s slots, or None when all are held."""


def is_redis(uri: str) -> bool:
    """True when a storage URI names Redis (limits and leases are then shared)."""
    return urlsplit(uri).scheme in REDIS_SCHEMES


# --- in this process ---------------------------------------------------------------------


class PerKey:
    """At most ``size`` holders per key, counted in this process; never waits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> Lease | None:
        """A lease on one of ``key``'s slots, or None when it has ``size`` already."""
        with self._lock:
            if self._held.get(key, 0) >= self.size:
                return None
            self._held[key] = self._held.get(key, 0) + 1
        return _LocalLease(self, key)

    def _release(self, key: str) -> None:
        # The key is forgotten at zero: memory stays bounded by what is held.
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)


class _LocalLease:
    def __init__(self, owner: PerKey, key: str) -> None:
        self._owner, self._key = owner, key
        self._once = threading.Lock()

    def release(self) -> None:
        """Give the slot back (only the first call counts)."""
        if self._once.acquire(blocking=False):
            self._owner._release(self._key)


# --- wiring --------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Use Redis when ``RATELIMIT_STORAGE_URI`` names it (ConfigError if it does not answer)."""
    cfg = app.config
    uri = cfg["RATELIMIT_STORAGE_URI"]
    if not is_redis(uri):
        app.extensions["securechat.redis_pool"] = None
        app.extensions["securechat.leases"] = None
        return
    import redis

    pool = connect(uri)
    app.extensions["securechat.redis_pool"] = pool
    app.extensions["securechat.leases"] = RedisLeases(
        redis.Redis(connection_pool=pool), cfg["REDIS_KEY_PREFIX"], float(cfg["LEASE_TTL"]))


def per_key(app: Flask, name: str, size: int) -> PerKeyCap:
    """A per-key cap named ``name``: in Redis when the app has it, else in this process."""
    leases: RedisLeases | None = app.extensions.get("securechat.leases")
    return PerKey(size) if leases is None else leases.per_key(name, size)


def storage_options(app: Flask) -> dict[str, Any]:
    """What Flask-Limiter's storage needs to share the app's Redis pool and key prefix."""
    pool = app.extensions.get("securechat.redis_pool")
    if pool is None:
        return {}
    # Errors become limits' StorageError, which the app answers with a JSON 503.
    return {"connection_pool": pool, "key_prefix": app.config["REDIS_KEY_PREFIX"] + ":limits",
            "wrap_exceptions": True}
