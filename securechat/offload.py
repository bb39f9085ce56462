"""Blocking work kept off the event loop when serving under gevent; a plain call otherwise.

Under ``serve`` every connection is a greenlet on one event loop: a call that blocks the
thread (a 128 MiB password KDF, an fsync at commit, a wait for another process's write
lock) would stall every stream at once. :func:`blocking` runs such a call in one of
gevent's worker threads while the loop goes on; in threads (the notebooks' background
server, tests) it is just a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def cooperative() -> bool:
    """True when gevent has patched this process (``serve``), so threads are greenlets."""
    try:
        from gevent import monkey
    except ImportError:  # gevent is only needed to serve
        return False
    return bool(monkey.is_module_patched("socket"))


def blocking(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, where its blocking cannot stall other requests."""
    if cooperative():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)
