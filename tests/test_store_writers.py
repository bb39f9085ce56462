"""SQLite's writers, machine-wide: one lock file beside the database, held one at a time."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from securechat.store.writers import Writers, lock_path


def test_two_holders_of_one_file_take_turns(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    first, second = Writers(path), Writers(path)  # as two processes: two open files
    order: list[str] = []
    with first:
        waiter = threading.Thread(target=lambda: (second.__enter__(), order.append("second"),
                                                  second.__exit__(None, None, None)))
        waiter.start()
        time.sleep(0.2)
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]
    first.close()
    second.close()


def test_the_lock_is_reentrant_and_released_only_by_the_outermost_exit(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    holder, other = Writers(path), Writers(path, timeout=0.1)
    with holder:
        with holder:
            pass
        # Still held after the inner exit: the other file cannot take it.
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), other:
            pass
    with other:  # free now
        pass
    holder.close()
    other.close()


def test_a_waiter_gives_up_after_its_timeout_as_sqlite_would(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    holder, waiter = Writers(path), Writers(path, timeout=0.3)
    with holder:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), waiter:
            pass
        assert time.monotonic() - started >= 0.3
    holder.close()
    waiter.close()


def test_the_lock_file_is_owner_only_and_empty(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    assert path == str(tmp_path / "db.sqlite3-writers")
    with Writers(path) as writers:
        pass
    writers.close()
    mode = os.stat(path).st_mode
    assert stat.S_IMODE(mode) & 0o077 == 0 and os.path.getsize(path) == 0


def test_an_in_memory_database_locks_this_process_only() -> None:
    assert lock_path(":memory:") is None and lock_path("") is None
    with Writers(None), Writers(None):  # nothing on disk, and no wait for itself
        pass


def test_a_wait_given_up_does_not_keep_the_lock_when_it_comes(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    holder, quitter, later = Writers(path), Writers(path, timeout=0.2), Writers(path, 5)
    with holder, pytest.raises(sqlite3.OperationalError), quitter:
        pass
    # The quitter's thread still waited, and was handed the lock: it must let it go.
    time.sleep(0.3)
    started = time.monotonic()
    with later:
        pass
    assert time.monotonic() - started < 4, "the abandoned wait kept the lock"
    for writers in (holder, quitter, later):
        writers.close()
