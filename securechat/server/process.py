"""What the serving process asks of the operating system: open files, core dumps, memory.

Set once by ``python -m securechat serve`` before any key is in memory: the open-files
limit raised for every connection and backend socket, core dumps forbidden (one would hold
decrypted keys and messages), and glibc told to give large allocations back when freed.
"""

from __future__ import annotations

import contextlib
import logging
import resource

log = logging.getLogger(__name__)


def connection_cap(wanted: int, reserve: int = 64, streams: int = 0) -> int:
    """``wanted``, or fewer when the open-files limit cannot hold that many connections.

    Past the limit, accept() fails over and over (EMFILE); a pool that never asks for more
    than the limit allows keeps the server answering the connections it has. Each of
    ``streams`` backend calls holds a socket of its own too: the limit is raised for
    those (up to the hard limit), and a limit too low for them is said at start.
    """
    raise_open_files_limit(wanted + streams + reserve)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft - reserve < wanted + streams:
        log.warning("%d open files allow fewer than MAX_CONNECTIONS=%d client connections "
                    "and MAX_STREAMS=%d backend connections at once: past it new ones "
                    "fail (raise the open-files limit, e.g. LimitNOFILE)", soft, wanted,
                    streams)
    if soft == resource.RLIM_INFINITY or soft - reserve >= wanted:
        return wanted
    allowed = max(1, soft - reserve)
    log.warning("MAX_CONNECTIONS=%d is more than %d open files allow: serving at most %d",
                wanted, soft, allowed)
    return allowed


def no_core_dumps() -> None:
    """Forbid core dumps of this process: one would hold decrypted data keys and messages."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# glibc's mallopt parameter for the size from which malloc maps memory of its own.
_M_MMAP_THRESHOLD = -3


def unmap_large_allocations(threshold: int = 1024 * 1024) -> bool:
    """Have glibc map every allocation from ``threshold`` bytes up, and unmap it when freed.

    By default glibc raises that threshold after each large free, so a login's KDF memory
    (19 MiB for Argon2id) is soon taken from the heap and kept there after the login:
    measured, 20 MB more RSS at rest and at the peak of 8 logins at once (benchmark section
    9). Mapped, it goes back to the system as each login ends. False off glibc (nothing
    done there).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return False
    return bool(mallopt and mallopt(_M_MMAP_THRESHOLD, threshold) == 1)


def raise_open_files_limit(wanted: int) -> None:
    """Allow ``wanted`` open files (each connection is one), up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
