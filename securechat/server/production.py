"""The production server behind ``python -m securechat serve``: gevent, one greenlet a connection.

An AI chat is many long, mostly idle streams; a thread per stream runs out long before the
machine does. Under gevent a stream waiting on the backend costs a greenlet (a few KiB),
and blocking work runs off the event loop: password KDFs and SQLite writes in worker
threads (:mod:`securechat.offload`). On top of gevent's WSGI server this sets what
a private chat needs:

* nothing spooled to disk: a request body is read into memory (at most
  ``MAX_CONTENT_LENGTH``; ``MAX_IMPORT_BYTES`` for ``POST /api/import``) before the app
  runs, and a response goes straight to the socket,
  waiting for a slow reader instead of buffering for it;
* deadlines per connection: the request line, headers and body must arrive within
  ``REQUEST_TIMEOUT`` (an idle keep-alive connection is closed then too, and a client
  trickling a byte at a time cannot hold one), and a client that reads nothing of its
  response for ``WRITE_TIMEOUT`` is dropped (its stream's slots are freed);
* at most ``IMPORT_CONCURRENCY`` bodies larger than ``MAX_CONTENT_LENGTH`` (imports) read
  at once: another gets its 503 without its body being read, so large uploads, from
  anyone (the session is checked only later), cannot add up in memory;
* at most ``MAX_CONNECTIONS`` connections and, without a trusted proxy,
  ``MAX_CONNECTIONS_PER_ADDRESS`` per client address;
* the server's own errors (400, 413, 414) as the API's JSON, and no access log (a log line
  per request would say who talks to whom, and when).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import gevent
import gevent.lock
from flask import Flask
from gevent.pool import Pool
from gevent.pywsgi import Input, WSGIHandler, WSGIServer
from werkzeug.http import parse_cookie

from ..protocol import client_key
from . import process
from .http import IMPORT_BUSY
from .sessions import cookie_name, cookie_signer
from .sockets import no_delay

log = logging.getLogger(__name__)

# How long a connection refused for its body's size reads on before it closes (seconds).
LINGER = 2.0
# The one route whose body may be larger than MAX_CONTENT_LENGTH (up to MAX_IMPORT_BYTES).
IMPORT_PATH = "/api/import"



_JSON_HEADERS = ("Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
                 "Cache-Control: no-store\r\nContent-Security-Policy: default-src 'none'\r\n")
_REASONS = {"400": ("Bad Request", "bad_request"), "414": ("URI Too Long", "bad_request"),
            "431": ("Request Header Fields Too Large", "bad_request"),
            "500": ("Internal Server Error", "internal_error")}


def json_error(status: str) -> bytes:
    """A whole HTTP response carrying the API's JSON error for a server-level ``status``."""
    reason, code = _REASONS.get(status, ("Bad Request", "bad_request"))
    body = json.dumps({"error": {"code": code, "message": reason + "."}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\n{_JSON_HEADERS}Connection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class _Drained(Input):
    """Stands in for a body left unread: nothing is discarded (the connection closes)."""

    def __init__(self) -> None:
        super().__init__(io.BufferedReader(io.BytesIO()), 0)

    def _discard(self) -> None:
        """Nothing to read."""


class Handler(WSGIHandler):
    """One connection: its request arrives within a deadline, whole, before the app runs."""

    server: Server


    # Set per server from the app's settings. The import route alone takes a whole export.
    max_body = 1024 * 1024
    max_import = 64 * 1024 * 1024
    request_timeout = 30.0
    write_timeout = 60.0

    def handle(self) -> None:
        """Serve the connection's requests; a send that makes no progress times out."""
        self.socket.settimeout(self.write_timeout)
        no_delay(self.socket)
        super().handle()

    def handle_one_request(self) -> Any:
        """One request: read within REQUEST_TIMEOUT, then answered; errors as JSON."""
        # The whole request (line, headers and body) must arrive in time; the response
        # may take as long as the app's own bounds allow (a stream, a slow backend).
        self._deadline = gevent.Timeout(self.request_timeout)
        self._deadline.start()
        self._refused = False
        self._large = False
        try:
            result = super().handle_one_request()
        except gevent.Timeout as e:
            if e is not self._deadline:
                raise
            return None  # too slow to ask: close the connection without a word
        finally:
            self._deadline.close()
            if self._large:  # held from reading the body until the answer was sent
                self.server.large_bodies.release()
        if self._refused:
            self._linger()
        if isinstance(result, tuple):
            return result[0], json_error(str(result[0]))
        return result

    def _sendall(self, data: bytes) -> None:
        """Write ``data``: one send when the socket has room, gevent's sendall for the rest.

        A streamed reply is hundreds of small writes; gevent's sendall asks the kernel for
        the socket's buffer size before each one (a system call per token).
        """
        try:
            sent = self.socket.send(data)  # waits at most write_timeout for room
        except OSError as e:  # recorded as gevent's own sendall does
            self.status = f"socket error: {e}"
            if self.code is not None and self.code > 0:
                self.code = -self.code
            raise
        self.response_length += sent
        if sent < len(data):
            super()._sendall(memoryview(data)[sent:])  # type: ignore[misc]  # not in stubs

    def get_environ(self) -> dict[str, Any]:
        """The WSGI environ, with the body already read into memory (bounded)."""
        environ = super().get_environ()
        limit = self.max_body
        if environ.get("PATH_INFO") == IMPORT_PATH and environ.get("REQUEST_METHOD") == "POST":
            if not self._may_be_large(environ):
                pass
            elif not self.server.signed_in(environ):
                # No session cookie this server signed: the app answers 401 without the
                # body, which a stranger cannot make it read (nor hold a slot with).
                return self._unread(environ)
            elif self.server.large_bodies.acquire(blocking=False):
                self._large, limit = True, max(limit, self.max_import)
            else:
                # Every large-body slot is taken: the body stays unread (never in memory).
                environ[IMPORT_BUSY] = True
                return self._unread(environ)
        body = self._read_body(environ["wsgi.input"], limit)
        self._deadline.close()  # it has all arrived: from here on the app's bounds apply
        if len(body) > limit:
            # The app answers its JSON 413 from the length; the rest is never read, so
            # the connection cannot carry another request.
            self.close_connection = True
            self.wsgi_input = _Drained()
            self._refused = True
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return environ

    def _unread(self, environ: dict[str, Any]) -> dict[str, Any]:
        """The environ of a request whose body is left unread; the connection then closes."""
        self.close_connection = True
        self.wsgi_input = _Drained()
        self._refused = True
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["CONTENT_LENGTH"] = "0"
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        self._deadline.close()
        return environ

    def _may_be_large(self, environ: dict[str, Any]) -> bool:
        """Whether the body may exceed MAX_CONTENT_LENGTH (its length said, or unknown)."""
        length = environ.get("CONTENT_LENGTH")
        if environ.get("HTTP_TRANSFER_ENCODING") or not length:
            return bool(environ.get("HTTP_TRANSFER_ENCODING"))
        try:
            return int(length) > self.max_body
        except ValueError:
            return False

    def _linger(self) -> None:
        """After a 413: end our side, then read and drop what the client still sends.

        Closed with its body unread, the socket would answer the client's next bytes with
        a reset, which can destroy the 413 before the client reads it. At most
        ``LINGER`` seconds, and nothing read is kept.
        """
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)
            self.socket.settimeout(0.5)
            deadline = time.monotonic() + LINGER
            while time.monotonic() < deadline and self.socket.recv(65536):
                pass

    def _read_body(self, stream: Any, limit: int) -> bytes:
        """At most ``limit + 1`` bytes of the body: enough to tell it is too large."""
        chunks, size = [], 0
        while size <= limit:
            data = stream.read(min(65536, limit + 1 - size))
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks)

    def finalize_headers(self) -> None:
        """gevent's headers, a ``Server`` that names no software version, and ``close``.

        gevent closes an HTTP/1.1 connection it was told to close (a body too large to
        read, a client that asked) without saying so; the client must learn it from the
        response, not from a reset when it sends the next request.
        """
        super().finalize_headers()
        headers: list[tuple[Any, Any]] | None = self.response_headers
        if headers is None:  # never, once start_response has run
            return
        # gevent keeps the headers latin-1 encoded here (its stubs say str); the app's
        # own could in principle be str: compare both.
        names = {(n if isinstance(n, bytes) else n.encode("latin-1")).lower()
                 for n, _ in headers}
        if (self.close_connection and self.request_version == "HTTP/1.1"
                and b"connection" not in names):
            headers.append((b"Connection", b"close"))
        headers.append((b"Server", b"securechat"))

    def log_request(self) -> None:
        """No access log."""

    def handle_error(self, t: type[BaseException] | None, v: BaseException | None,
                     tb: TracebackType | None) -> None:
        """An app error is gevent's to report; a client that stopped reading is not one."""
        if t is not None and issubclass(t, TimeoutError):
            log.info("a client read nothing for %.0f s: its connection was closed",
                     self.write_timeout)
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def _handle_client_error(self, ex: Exception) -> Any:
        # A malformed request is the client's error: one debug line, the JSON 400.
        log.debug("malformed request: %s", type(ex).__name__)
        self.close_connection = True
        return "400", json_error("400")

    def _send_error_response_if_possible(self, error_code: int) -> None:
        self.close_connection = True
        if not self.response_length and not self.headers_sent:
            with contextlib.suppress(OSError):
                self.socket.sendall(json_error(str(error_code)))


class Server(WSGIServer):
    """gevent's WSGI server with a cap on open connections per client address."""

    def __init__(self, listener: socket.socket, app: Flask, max_connections: int,
                 per_address: int) -> None:
        cfg = app.config
        handler = type("ConfiguredHandler", (Handler,), {
            "max_body": int(cfg["MAX_CONTENT_LENGTH"]),
            "max_import": int(cfg["MAX_IMPORT_BYTES"]),
            "request_timeout": float(cfg["REQUEST_TIMEOUT"]),
            "write_timeout": float(cfg["WRITE_TIMEOUT"])})
        super().__init__(listener, app, spawn=Pool(max_connections), handler_class=handler,
                         log=None, error_log=_ErrorLog())
        self.per_address = per_address
        self._open: dict[str, int] = {}
        self.large_bodies = gevent.lock.BoundedSemaphore(int(cfg["IMPORT_CONCURRENCY"]))
        self._cookie, self._signer = cookie_name(cfg), cookie_signer(cfg)

    def signed_in(self, environ: dict[str, Any]) -> bool:
        """Whether the request carries a session cookie this server signed (live or not)."""
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(self._cookie)
        return cookie is not None and self._signer.validate(cookie)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve one connection, unless its address already holds ``per_address`` of them."""
        host = client_key(address[0] if isinstance(address, tuple) else str(address))
        if self.per_address and self._open.get(host, 0) >= self.per_address:
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._open[host] = self._open.get(host, 0) + 1
        try:
            super().handle(sock, address)
        finally:
            left = self._open[host] - 1
            if left:
                self._open[host] = left
            else:
                del self._open[host]


class _ErrorLog:
    """gevent's error output, into logging (one line, no traceback of client errors)."""

    def write(self, text: str, /) -> None:
        """One message of gevent's, as a warning."""
        if text.strip():
            log.warning("%s", text.strip())

    def flush(self) -> None:
        """Nothing is buffered."""

    def writelines(self, lines: Iterable[str], /) -> None:
        """Each line, as :meth:`write` does."""
        for line in lines:
            self.write(line)


def make_server(app: Flask, listener: socket.socket) -> Server:
    """The server for ``app`` on ``listener`` with the app's connection caps."""
    cfg = app.config
    # Behind a proxy every client shares its address: the proxy must cap connections there.
    per_address = 0 if int(cfg["PROXY_FIX"]) else int(cfg["MAX_CONNECTIONS_PER_ADDRESS"])
    cap = process.connection_cap(int(cfg["MAX_CONNECTIONS"]), streams=int(cfg["MAX_STREAMS"]))
    return Server(listener, app, cap, per_address)
