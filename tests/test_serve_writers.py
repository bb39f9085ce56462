"""SQLite writers under the real `serve`: another process's write lock stalls no one else.

`serve` runs every request on one event loop. A write that waits for SQLite's lock (held
by another process: a second `serve` worker, a backup, a maintenance script) must wait off
that loop, or every other request waits with it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from securechat import ChatClient
from securechat.store.writers import Writers, lock_path

from .helpers import PASSWORD
from .served import Served, serve_env


@pytest.fixture
def served(instance: Path) -> Iterator[Served]:
    s = Served(instance, serve_env())
    yield s
    s.kill()


def test_a_send_waiting_for_another_process_lock_stalls_no_other_request(
        served: Served, instance: Path) -> None:
    with ChatClient(served.url, timeout=60) as alice, \
            ChatClient(served.url, timeout=10) as reader:
        alice.register("alice", PASSWORD)
        alice.login("alice", PASSWORD)
        conv = alice.new_conversation("locked")["id"]
        alice.send(conv, "before the lock")
        reader.login("alice", PASSWORD)  # a second device, signed in before the lock

        other = sqlite3.connect(instance / "securechat.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
        sent: list[object] = []
        sender = threading.Thread(target=lambda: sent.append(alice.send(conv, "waits")))
        waited = []
        try:
            sender.start()
            time.sleep(0.5)  # the send reaches its write and waits for the lock
            for _ in range(5):
                started = time.monotonic()
                # Liveness bounds, not speed assertions: a loop stuck in SQLite's busy
                # handler would hold both for its 30 s timeout.
                assert requests.get(served.url + "/api/health", timeout=10).status_code == 200
                assert [m["content"] for m in reader.history(conv)] == [
                    "before the lock", "Echo: before the lock"]
                waited.append(time.monotonic() - started)
            assert sender.is_alive(), "the send did not wait for the other process's lock"
        finally:
            other.execute("ROLLBACK")
            other.close()
            sender.join(60)
        print(f"\n[serve] health and history while a send waited: max "
              f"{max(waited) * 1000:.0f} ms")
        assert not sender.is_alive() and len(sent) == 1
        assert [m["content"] for m in alice.history(conv)] == [
            "before the lock", "Echo: before the lock", "waits", "Echo: waits"]


def test_another_process_writing_holds_serve_back_until_it_is_done(served: Served,
                                                                   instance: Path) -> None:
    with ChatClient(served.url, timeout=60) as alice, \
            ChatClient(served.url, timeout=10) as reader:
        alice.register("alice", PASSWORD)
        alice.login("alice", PASSWORD)
        conv = alice.new_conversation("queued")["id"]
        reader.login("alice", PASSWORD)
        # Another securechat process on this machine, in the middle of its write.
        other = Writers(lock_path(str(instance / "securechat.sqlite3")))
        other.__enter__()
        sender = threading.Thread(target=lambda: alice.send(conv, "after you"))
        try:
            sender.start()
            time.sleep(0.5)
            assert requests.get(served.url + "/api/health", timeout=10).status_code == 200
            assert reader.history(conv) == []
            assert sender.is_alive(), "serve wrote while another process held the lock"
        finally:
            other.__exit__(None, None, None)
            other.close()
            sender.join(60)
        assert not sender.is_alive()
        assert [m["content"] for m in alice.history(conv)] == ["after you", "Echo: after you"]
