"""Deltas of a streamed reply that arrive close together leave as one event.

Each Server-Sent Event costs the server a write (a system call, a chunk header, a switch
between greenlets) however small its text; a backend that streams a token every few
milliseconds to many users at once would spend more on events than on anything else. A
pump reads the backend into a queue, and at most one event leaves per ``window`` seconds:
a delta that comes after a quiet spell (the reply's first among them) leaves at once, one
that follows an event closely waits at most ``window`` for others to join it. Order and
text are kept; an error comes after every delta that arrived before it.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..offload import cooperative

# Chunks read ahead of a client that reads slowly; then the backend waits (as it would
# without a pump) rather than this process holding the rest of the reply.
READ_AHEAD = 1024
_END = object()


class _Failed:
    """An exception of the backend's stream, raised where the reply is read."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def coalesced(chunks: Iterator[str], window: float,
              clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """``chunks`` in order, those arriving within ``window`` seconds of each other merged.

    The first chunk is never held; a later one at most ``window``, and only when an
    event left less than ``window`` before it came. With ``window`` 0 the chunks pass one
    by one, unchanged. Closing this generator stops the backend's stream (at once under
    gevent; at its next chunk in a thread, which cannot be interrupted).
    """
    if window <= 0:
        yield from chunks
        return
    ahead: queue.Queue[Any] = queue.Queue(READ_AHEAD)
    stop = threading.Event()
    stop_pump = _start(contextvars.copy_context(), chunks, ahead, stop)
    try:
        first = ahead.get()
        if not isinstance(first, str):
            _end(first)
            return
        sent = clock()
        yield first
        while True:
            item = ahead.get()
            if not isinstance(item, str):
                _end(item)
                return
            # At most one event per window: a delta that comes after a quiet spell leaves
            # at once; one that follows the last event closely waits for the window's end.
            merged, item = _gather(ahead, item, sent + window, clock)
            sent = clock()
            yield merged
            if item is not None:
                _end(item)
                return
    finally:
        stop.set()
        _drain(ahead)  # room for the pump's last put, so it can see ``stop``
        stop_pump()


def _gather(ahead: queue.Queue[Any], text: str, until: float,
            clock: Callable[[], float]) -> tuple[str, Any]:
    """``text`` and what follows it until ``until`` (what is there already, once past).

    Also returns the end or the error, if it came meanwhile.
    """
    parts = [text]
    while (left := until - clock()) > 0:
        try:
            item = ahead.get(timeout=left)
        except queue.Empty:
            break
        if not isinstance(item, str):
            return "".join(parts), item
        parts.append(item)
    # What has already arrived joins too (a count taken once: a fast pump cannot keep
    # this event open).
    for _ in range(ahead.qsize()):
        item = ahead.get_nowait()
        if not isinstance(item, str):
            return "".join(parts), item
        parts.append(item)
    return "".join(parts), None


def _end(item: Any) -> None:
    """The stream ended (return) or failed (raise its exception)."""
    if isinstance(item, _Failed):
        raise item.error


def _drain(ahead: queue.Queue[Any]) -> None:
    while True:
        try:
            ahead.get_nowait()
        except queue.Empty:
            return


def _start(context: contextvars.Context, chunks: Iterator[str], ahead: queue.Queue[Any],
           stop: threading.Event) -> Callable[[], None]:
    """Run the pump in a greenlet (under gevent) or a thread; return how to stop it."""

    def pump() -> None:
        try:
            for chunk in chunks:
                ahead.put(chunk)
                if stop.is_set():
                    return
            ahead.put(_END)
        except Exception as e:  # noqa: BLE001 - handed to the reader, raised there
            if not stop.is_set():
                ahead.put(_Failed(e))
        except BaseException as e:  # killed, or the interpreter stopping: the reader ends
            if not stop.is_set():
                ahead.put(_Failed(e))
            raise
        finally:
            # In the pump's own thread: a generator cannot be closed from another while
            # it runs. Closing the backend's stream tells it to stop generating.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    if cooperative():
        import gevent

        greenlet = gevent.spawn(context.run, pump)
        # GreenletExit is raised wherever the pump waits (a read from the backend): the
        # backend's stream closes now, not at its next chunk.
        return lambda: greenlet.kill(block=True, timeout=5)
    thread = threading.Thread(target=context.run, args=(pump,), daemon=True,
                              name="securechat-stream-pump")
    thread.start()
    return lambda: None
