"""Leases in Redis, shared by every ``serve`` process: the connection, the scripts, the renewer.

Each holder is a member of a sorted set scored by when it expires (Redis's own clock, so
machines need not agree on the time): a process that dies without releasing frees its
slots once ``LEASE_TTL`` runs out, and a live process renews its leases every third of
that (a stream may last minutes). :mod:`securechat.server.leases` decides when they are
used (``RATELIMIT_STORAGE_URI`` names a Redis) and holds the in-process twin.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from limits.errors import StorageError

from ..errors import ConfigError

if TYPE_CHECKING:
    import redis

    from .leases import Lease

log = logging.getLogger(__name__)

# A Redis that does not answer within this long counts as down: the request is refused
# (503) rather than held. Generous for a healthy Redis, which answers in a millisecond.
REDIS_TIMEOUT = 2.0

# Take a slot if fewer than ARGV[1] unexpired leases hold KEYS[1]; expired ones are swept
# first, so a dead process's slots come back by themselves.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
# Push a live lease's expiry on; 0 when it already expired (its slot may be another's now).
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not expiry or tonumber(expiry) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


class RedisLeases:
    """Leases kept in Redis under ``prefix``, renewed by one background thread while held.

    The thread also deletes leases whose fate is unknown: a take or a release that failed
    may still reach Redis later (a command that timed out here can arrive late), so such a
    lease is deleted again each round until its TTL has surely passed, and a slot comes
    back soon after Redis does. The thread runs only while there is such work (it ends
    with the last lease), so an idle app leaves nothing running.
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        import redis

        self.client, self.prefix, self.ttl = client, prefix, ttl
        self._error = redis.RedisError
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._live: dict[str, _RedisLease] = {}
        self._unsure: dict[str, tuple[str, float]] = {}  # lease id -> (key, delete until)
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._closed = threading.Event()
        self._failing = False

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def per_key(self, name: str, size: int) -> RedisPerKey:
        """A cap of ``size`` holders per key, in the Redis set ``<prefix>:lease:<name>:<key>``."""
        return RedisPerKey(self, name, size)

    def take(self, redis_key: str, size: int) -> Lease | None:
        """A lease in ``redis_key`` if fewer than ``size`` hold it; StorageError if Redis fails."""
        lease_id = secrets.token_hex(16)
        try:
            taken = self._acquire(keys=[redis_key], args=[size, self._ttl_ms, lease_id])
        except self._error as e:
            self._delete_later(redis_key, lease_id)
            raise StorageError(e) from e
        if not taken:
            return None
        lease = _RedisLease(self, redis_key, lease_id)
        with self._lock:
            self._live[lease_id] = lease
            self._start_renewer()
        return lease

    def give_back(self, lease: _RedisLease) -> None:
        """Delete ``lease`` from Redis; if Redis fails, later (never raises)."""
        with self._lock:
            self._live.pop(lease.lease_id, None)
        try:
            self.client.zrem(lease.redis_key, lease.lease_id)
        except self._error as e:
            log.warning("could not release a lease in Redis (%s): retried until it answers; "
                        "the lease frees itself within LEASE_TTL anyway", type(e).__name__)
            self._delete_later(lease.redis_key, lease.lease_id)

    @property
    def held(self) -> int:
        """Leases this process holds now."""
        return len(self._live)

    def close(self) -> None:
        """Stop renewing and close the connections (leases still held expire by their TTL)."""
        self._closed.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(10)
        self.client.close()
        self.client.connection_pool.disconnect()

    def _delete_later(self, redis_key: str, lease_id: str) -> None:
        until = time.monotonic() + self.ttl + 2 * REDIS_TIMEOUT
        with self._lock:
            self._unsure[lease_id] = (redis_key, until)
            self._start_renewer()

    def _start_renewer(self) -> None:
        # Called with self._lock held.
        if self._renewer is None and not self._closed.is_set():
            self._renewer = threading.Thread(target=self._renew_while_held, daemon=True,
                                             name="securechat-lease-renewer")
            self._renewer.start()

    def _renew_while_held(self) -> None:
        me = threading.current_thread()
        try:
            while not self._closed.wait(self.ttl / 3):
                now = time.monotonic()
                with self._lock:
                    held = list(self._live.values())
                    self._unsure = {i: v for i, v in self._unsure.items() if v[1] > now}
                    unsure = list(self._unsure.items())
                    if not held and not unsure:
                        # Decided under the lock new work starts threads under: work
                        # arriving from now on starts a new thread.
                        self._renewer = None
                        return
                self._renew_all(held, unsure)
        finally:
            with self._lock:
                if self._renewer is me:  # closed, or a bug: let later work start one
                    self._renewer = None

    def _renew_all(self, held: list[_RedisLease],
                   unsure: list[tuple[str, tuple[str, float]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for lease in held:
            self._renew(keys=[lease.redis_key], args=[self._ttl_ms, lease.lease_id], client=pipe)
        for lease_id, (redis_key, _) in unsure:
            pipe.zrem(redis_key, lease_id)
        try:
            answers = pipe.execute()
        except self._error as e:
            if not self._failing:  # one line per outage, not one per round
                log.warning("cannot renew leases in Redis (%s): slots held here free "
                            "themselves if it lasts past LEASE_TTL", type(e).__name__)
                self._failing = True
            return
        if self._failing:
            log.warning("renewing leases in Redis works again")
            self._failing = False
        for lease, ok in zip(held, answers[:len(held)], strict=True):
            with self._lock:
                lost = not ok and self._live.pop(lease.lease_id, None) is not None
            if lost:
                log.warning("a lease in Redis expired before it was renewed: its slot was "
                            "counted free meanwhile")


class RedisPerKey:
    """At most ``size`` holders per key across every process sharing the Redis."""

    def __init__(self, leases: RedisLeases, name: str, size: int) -> None:
        self.size, self._leases = size, leases
        self._base = f"{leases.prefix}:lease:{name}:"

    def acquire(self, key: str) -> Lease | None:
        """A lease on one of ``key``'s slots, or None; StorageError when Redis fails."""
        return self._leases.take(self._base + key, self.size)

    def redis_key(self, key: str) -> str:
        """The Redis sorted set holding ``key``'s leases."""
        return self._base + key


class _RedisLease:
    def __init__(self, owner: RedisLeases, redis_key: str, lease_id: str) -> None:
        self.redis_key, self.lease_id = redis_key, lease_id
        self._owner = owner
        self._once = threading.Lock()

    def release(self) -> None:
        """Give the slot back (only the first call counts; never raises)."""
        if self._once.acquire(blocking=False):
            self._owner.give_back(self)


# --- the connection ------------------------------------------------------------------------


def connect(uri: str) -> redis.ConnectionPool:
    """A connection pool for the Redis ``uri``, checked to answer; ConfigError if not."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigError("RATELIMIT_STORAGE_URI names Redis, but the redis package is not "
                          "installed: pip install 'securechat[redis]'") from None
    where = _where(uri)
    try:
        pool = redis.ConnectionPool.from_url(
            uri.replace("redis+unix://", "unix://", 1),
            socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            # One retry on a dropped connection (a restarted Redis), none on a timeout:
            # a Redis that hangs must cost one REDIS_TIMEOUT, not four.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    except ValueError as e:
        raise ConfigError(f"RATELIMIT_STORAGE_URI is not a usable Redis URL ({e})") from None
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()
    except redis.RedisError as e:
        pool.disconnect()
        raise ConfigError(f"RATELIMIT_STORAGE_URI: Redis at {where} does not answer "
                          f"({type(e).__name__}: {e})") from None
    return pool


def _where(uri: str) -> str:
    """Where ``uri`` points, without its user name or password."""
    parts = urlsplit(uri)
    if parts.scheme == "redis+unix":
        return parts.path
    port: int | str
    try:
        port = parts.port or 6379
    except ValueError:  # settings refuse it; connect() may be called without them
        port = "?"
    return f"{parts.hostname}:{port}{parts.path or ''}"
