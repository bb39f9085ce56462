"""The listening socket, and the options each accepted connection gets."""

from __future__ import annotations

import contextlib
import socket


def no_delay(sock: socket.socket) -> None:
    """Send small writes at once (TCP_NODELAY) on a TCP connection.

    gevent sends a response's headers and its body in two writes; with Nagle's algorithm
    the body then waits for the client to acknowledge the headers, which Linux delays up
    to 40 ms: measured, every keep-alive JSON answer took 44 ms instead of 1, and each
    streamed event could wait as long behind the one before.
    """
    with contextlib.suppress(OSError):  # not TCP (a Unix socket handed over): nothing to do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket (bound before any worker starts, so the port is known)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
