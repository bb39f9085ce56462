"""The production WSGI server behind ``python -m securechat serve``: waitress, made safe.

waitress's defaults are tuned for ordinary sites; for a private chat they do three things
we must not: they write request and response bodies over 512 KiB / 1 MiB to temporary
files (a slow reader would make the server write decrypted history to ``/tmp``), they
strip ``X-Forwarded-For`` before the app could trust it behind a proxy, and they accept
only 100 connections, which 100 idle half-sent requests fill. :func:`make_server` sets:

* buffers that never reach the disk: every chunk of a response is at most
  :data:`CHUNK` bytes, waitress pauses the app once :data:`HIGH_WATERMARK` bytes wait for
  a slow client (more than any JSON answer holds), and a buffer only spills past
  :data:`OUTBUF_OVERFLOW`, which is above both; request bodies are refused (413, JSON)
  past the app's limit and held in memory below it;
* ``X-Forwarded-For`` passed to the app's ``ProxyFix`` when ``PROXY_FIX`` trusts proxies;
* room for many connections (poll, not select), a short idle timeout, and at most
  ``MAX_CONNECTIONS_PER_ADDRESS`` open connections per client address (without a proxy).
"""

from __future__ import annotations

import contextlib
import json
import resource
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.utilities import Error

from ..errors import ConfigError

CHUNK = 256 * 1024  # largest piece of a response handed to waitress at once
# Unsent bytes per connection before the app waits for the client. Above the largest
# JSON answer (a history page is at most ~3 MB), so a worker thread hands any of them
# over whole and moves on: a client that stops reading holds memory, never a thread.
# Only longer streams (SSE replies) wait for their reader, with the data in memory.
HIGH_WATERMARK = 4 * 1024 * 1024
OUTBUF_OVERFLOW = 8 * 1024 * 1024  # > HIGH_WATERMARK + CHUNK + headers: never reached
CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT = 30  # seconds an idle (or stalled, half-sent) connection may stay open
# Worker threads that are never busy with a backend call or a KDF run: health, pages, ...
SPARE_THREADS = 4

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def make_server(app: Flask, host: str, port: int, threads: int) -> BaseWSGIServer:
    """A waitress server for ``app`` with the settings above; raises ConfigError if unsafe."""
    cfg = app.config
    busy = int(cfg["MAX_STREAMS"]) + int(cfg["KDF_CONCURRENCY"]) + int(cfg["KDF_QUEUE"])
    if threads < busy + SPARE_THREADS:
        # Otherwise backend calls and password checks could take every thread: /api/health
        # and every other request would wait behind them.
        raise ConfigError(f"--threads {threads} is too few: MAX_STREAMS + KDF_CONCURRENCY + "
                          f"KDF_QUEUE = {busy}, plus {SPARE_THREADS} for everything else; "
                          f"use --threads {busy + SPARE_THREADS} or lower those settings")
    body_cap = int(cfg["MAX_CONTENT_LENGTH"])
    proxies = int(cfg["PROXY_FIX"])
    _raise_open_files_limit(CONNECTION_LIMIT + 64)
    server = create_server(
        _in_chunks(app), host=host, port=port, threads=threads, ident="securechat",
        # Bodies over the app's limit get waitress's 413 (JSON too, see _JSONErrorTask);
        # the rest is held in memory, never in a temporary file.
        max_request_body_size=body_cap, inbuf_overflow=body_cap + 64 * 1024,
        outbuf_high_watermark=HIGH_WATERMARK, outbuf_overflow=OUTBUF_OVERFLOW,
        connection_limit=CONNECTION_LIMIT, channel_timeout=CHANNEL_TIMEOUT,
        asyncore_use_poll=True,
        # Behind PROXY_FIX proxies the app's ProxyFix reads X-Forwarded-For; without it the
        # header is cleared (and the app ignores it anyway).
        clear_untrusted_proxy_headers=proxies == 0,
    )
    if not isinstance(server, BaseWSGIServer):
        # A host name with several addresses (``localhost`` on a dual-stack machine) gets
        # one listening server per address; the channel class below would reach none of
        # them (no per-address cap, no JSON errors), so refuse rather than serve without.
        addresses = ", ".join(f"{a}:{p}" for a, p in server.effective_listen)
        server.close()
        raise ConfigError(f"--host {host} resolves to several addresses ({addresses}); "
                          "give one address, such as 127.0.0.1")
    # Behind a proxy every client shares its address: the proxy must cap connections there.
    server.channel_class = _channel(0 if proxies else int(cfg["MAX_CONNECTIONS_PER_ADDRESS"]))
    return server


def _in_chunks(app: WSGIApp) -> WSGIApp:
    """Wrap ``app`` so no piece of a response is larger than :data:`CHUNK` bytes.

    waitress checks its high watermark between pieces; one 40 MB piece would be buffered
    whole (and spill to a temporary file) whatever the watermark.
    """

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        result = app(environ, start_response)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(result, wrapper):
            return result  # a file on disk already (static assets): sent from there
        return _Chunked(result)

    return wsgi


class _Chunked:
    """A response iterable cut into pieces of at most CHUNK bytes; closes the original."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        for data in self._result:
            if len(data) <= CHUNK:
                yield data
                continue
            view = memoryview(data)
            for start in range(0, len(data), CHUNK):
                yield bytes(view[start:start + CHUNK])

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class _JSONErrorTask(ErrorTask):
    """waitress's own errors (413, 400, 431) as the contract's JSON, with the usual headers."""

    def execute(self) -> None:
        # types-waitress declares Task.request as a utilities.Error; waitress hands an
        # ErrorTask the request parser, whose ``error`` is the Error to answer.
        error: Error = self.request.error  # type: ignore[attr-defined]
        slug = _SLUGS.get(error.code, "bad_request")
        body = json.dumps({"error": {"code": slug, "message": error.reason + "."}}).encode()
        self.status = f"{error.code} {error.reason}"
        # A new list rather than extend(): the stubs type the attribute as a Sequence.
        self.response_headers = [
            *self.response_headers,
            ("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"), ("Content-Security-Policy", "default-src 'none'")]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


_SLUGS = {400: "bad_request", 413: "too_large", 431: "headers_too_large",
          500: "internal_error", 501: "not_implemented"}


def _channel(per_address: int) -> type[HTTPChannel]:
    class Channel(HTTPChannel):
        """JSON errors; closed at once when its address already has ``per_address``."""

        error_task_class = _JSONErrorTask

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any,
                     map: Any = None) -> None:  # noqa: A002 - waitress's own name
            super().__init__(server, sock, addr, adj, map)
            if not per_address:
                return
            peers = sum(1 for channel in server.active_channels.values()
                        if getattr(channel, "addr", (None,))[0] == addr[0])
            if peers > per_address:
                self.will_close = True
                self.close()

    return Channel


def no_core_dumps() -> None:
    """Forbid core dumps of this process: one would hold decrypted data keys and messages."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _raise_open_files_limit(wanted: int) -> None:
    # Each connection is a file descriptor; the common soft limit of 1024 would stop
    # accept() before CONNECTION_LIMIT. Raise it up to the hard limit, never above.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
