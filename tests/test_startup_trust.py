"""`serve` refuses an instance another user could have tampered with, and a newer schema.

Exit status 2 and one clear line, before anything listens: a world-writable folder, a
writable ``config.json`` or database, or a ``secret_key`` others can read would let someone
else forge sessions or reconfigure the server.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from securechat import ConfigError, create_app, create_app_from_env

from .helpers import FAST
from .served import refused, serve_command, serve_env


def _prepared(instance: Path) -> None:
    """An instance as `serve` leaves it: folder, secret, database, config."""
    create_app(FAST, instance_path=instance)
    (instance / "config.json").write_text(json.dumps({"HISTORY_WINDOW": 10}))
    (instance / "config.json").chmod(0o600)


LOOSENED: dict[str, Callable[[Path], Path]] = {
    "world-writable folder": lambda i: i,
    "group-writable folder": lambda i: i,
    "readable secret_key": lambda i: i / "secret_key",
    "writable config.json": lambda i: i / "config.json",
    "writable database": lambda i: i / "securechat.sqlite3",
}
MODES = {"world-writable folder": 0o777, "group-writable folder": 0o770,
         "readable secret_key": 0o644, "writable config.json": 0o666,
         "writable database": 0o620}


@pytest.mark.parametrize("case", list(LOOSENED))
def test_serve_refuses_loose_permissions(instance: Path, case: str) -> None:
    _prepared(instance)
    target = LOOSENED[case](instance)
    target.chmod(MODES[case])
    proc = refused(instance, serve_env())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("securechat: refusing to start:")
    assert str(target) in lines[0] and "chmod" in lines[0]
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout
    # Fixed as the message says, the same instance starts.
    target.chmod(0o700 if target.is_dir() else 0o600)
    create_app(FAST, instance_path=instance)


def test_create_app_raises_config_error_for_a_foreign_writable_file(instance: Path) -> None:
    _prepared(instance)
    (instance / "config.json").chmod(0o646)
    with pytest.raises(ConfigError, match="config.json"):
        create_app(FAST, instance_path=instance)


def test_owner_only_instance_starts(instance: Path) -> None:
    _prepared(instance)
    for path in instance.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    assert instance.stat().st_mode & 0o777 == 0o700
    create_app(FAST, instance_path=instance)


def test_serve_refuses_a_newer_schema_cleanly(instance: Path) -> None:
    _prepared(instance)
    with closing(sqlite3.connect(instance / "securechat.sqlite3")) as db, db:
        db.execute("PRAGMA user_version = 999")
    db.close()
    proc = refused(instance, serve_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer" in lines[0] and "upgrade securechat" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="only root can give a file to another user")
def test_serve_refuses_files_of_another_user(instance: Path) -> None:
    _prepared(instance)
    os.chown(instance / "config.json", 65534, -1)  # nobody
    proc = refused(instance, serve_env())
    assert proc.returncode == 2 and "belongs to another user" in proc.stderr


def test_serve_refuses_a_dotenv_others_can_write(instance: Path, tmp_path: Path) -> None:
    # A writable .env could point the backend elsewhere or switch the limits off.
    work = tmp_path / "work"
    work.mkdir()
    dotenv = work / ".env"
    dotenv.write_text("SECURECHAT_RATELIMIT_ENABLED=false\n")
    dotenv.chmod(0o666)
    proc = subprocess.run(serve_command(instance), capture_output=True, text=True, cwd=work,
                          env=serve_env(), timeout=120)
    assert proc.returncode == 2 and str(dotenv) in proc.stderr and "chmod" in proc.stderr
    dotenv.chmod(0o600)
    with pytest.raises(ConfigError, match=".env"):
        dotenv.chmod(0o620)
        create_app_from_env(FAST, instance_path=instance, dotenv_path=dotenv)


@pytest.mark.parametrize("damage", ["config-list", "config-null", "secret-binary", "database"])
def test_serve_refuses_damaged_instance_files_in_one_line(instance: Path, damage: str) -> None:
    _prepared(instance)
    if damage.startswith("config"):
        (instance / "config.json").write_text("[1]" if damage == "config-list" else "null")
        says = "config.json"
    elif damage == "secret-binary":
        (instance / "secret_key").write_bytes(b"\xff\xfe\x00 not text")
        says = "secret_key"
    else:
        for suffix in ("", "-wal", "-shm"):
            (instance / f"securechat.sqlite3{suffix}").unlink(missing_ok=True)
        (instance / "securechat.sqlite3").write_bytes(b"definitely not SQLite " * 100)
        (instance / "securechat.sqlite3").chmod(0o600)
        says = "securechat.sqlite3"
    proc = refused(instance, serve_env())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("securechat: refusing to start:")
    assert says in lines[0] and "Traceback" not in proc.stderr
