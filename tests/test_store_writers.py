"""SQLite's writers, machine-wide: one lock file beside the database, held one at a time."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from securechat.store import connection
from securechat.store.writers import Writers, lock_path

Make = Callable[..., Writers]


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[Make]:
    """Makes holders of one database's lock file, as processes would be (each its own file)."""
    path = lock_path(str(tmp_path / "db.sqlite3"))
    made: list[Writers] = []

    def make(timeout: float = 30.0) -> Writers:
        made.append(Writers(path, timeout))
        return made[-1]

    yield make
    for writers in made:
        writers.close()


def test_two_holders_of_one_file_take_turns(holders: Make) -> None:
    first, second = holders(), holders()
    order: list[str] = []
    with first:
        waiter = threading.Thread(target=lambda: (second.__enter__(), order.append("second"),
                                                  second.__exit__(None, None, None)))
        waiter.start()
        time.sleep(0.2)
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]


def test_the_lock_is_reentrant_and_released_only_by_the_outermost_exit(holders: Make) -> None:
    holder, other = holders(), holders(timeout=0.1)
    with holder:
        with holder:
            pass
        # Still held after the inner exit: the other file cannot take it.
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), other:
            pass
    with other:  # free now
        pass


def test_a_waiter_gives_up_after_its_timeout_as_sqlite_would(holders: Make) -> None:
    holder, waiter = holders(), holders(timeout=0.3)
    with holder:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), waiter:
            pass
        assert time.monotonic() - started >= 0.3


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


def test_a_wait_given_up_does_not_keep_the_lock_when_it_comes(holders: Make) -> None:
    holder, quitter, later = holders(), holders(timeout=0.2), holders(timeout=5)
    with holder, pytest.raises(sqlite3.OperationalError), quitter:
        pass
    # The quitter's thread still waited, and was handed the lock: it must let it go.
    time.sleep(0.3)
    started = time.monotonic()
    with later:
        pass
    assert time.monotonic() - started < 4, "the abandoned wait kept the lock"


def _waiting_threads() -> int:
    return sum(t.name == "securechat-writers-lock" for t in threading.enumerate())


def test_waits_given_up_one_after_another_leave_one_thread_not_many(holders: Make) -> None:
    holder, quitter = holders(), holders(timeout=0.05)
    with holder:
        for _ in range(5):  # each takes over the wait the one before gave up
            with pytest.raises(sqlite3.OperationalError), quitter:
                pass
        assert _waiting_threads() == 1
    with holders(timeout=5):
        pass


def test_closing_while_held_waits_for_the_outermost_exit(holders: Make) -> None:
    holder, other = holders(), holders(timeout=0.1)
    with holder:
        holder.close()  # e.g. the pool dropped mid-transaction: the lock stays held
        with pytest.raises(sqlite3.OperationalError), other:
            pass
    with other:  # released, and closed, at the exit
        pass
    assert holder._fd is None


def test_a_symlink_or_another_users_file_is_refused(tmp_path: Path) -> None:
    path = lock_path(str(tmp_path / "db.sqlite3"))
    assert path is not None
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(OSError), Writers(path):
        pass
    os.unlink(path)
    if os.geteuid() != 0:
        return  # only root can give a file away; CI runs as root
    Path(path).touch()
    os.chown(path, 65534, 65534)
    with pytest.raises(sqlite3.OperationalError, match="another user"), Writers(path):
        pass


def test_only_small_row_writes_skip_the_worker_thread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connection.connect(str(tmp_path / "db.sqlite3"))
    conn.execute("CREATE TABLE t (v BLOB)")
    offloaded: list[str] = []

    def blocking(fn: Any, *args: Any) -> Any:
        offloaded.append(str(args[0]).split()[0])
        return fn(*args)

    monkeypatch.setattr(connection.offload, "blocking", blocking)
    with conn.transaction():
        conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 100,))
        conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 100_000,))
    conn.close()
    # The small row ran in place; BEGIN (it may wait), the large row and COMMIT did not.
    assert offloaded == ["BEGIN", "INSERT", "COMMIT"]
