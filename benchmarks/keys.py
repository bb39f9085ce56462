"""Section 9: your data, your keys: what a password change and a login cost.

A password change re-wraps the one data key; no message is touched, so its time must not
grow with the history (100 against 100,000 messages, and a checksum of every message row
before and after). A login runs the password KDF: Argon2id (the default) against scrypt,
its time alone and through `serve`, and the server's peak memory while 8 logins arrive at
once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from securechat import ChatClient, crypto
from securechat.errors import ApiError

from .history import fill_conversation
from .inprocess import PASSWORD, _expect, logged_in, securechat_app
from .report import Table, percentile
from .serve import ServeProcess, clean_env, memory_kib, reset_peak

USERNAME = "keys"
SECOND = "a second passphrase, as long"  # noqa: S105 - a benchmark account's password
_MB = 1024 / 1e6  # KiB → MB (10^6 bytes), the unit of the target

# (label, the KDF's parameters, serve's environment): the default, the other KDF, and
# the default with every login's KDF running at once.
KDF_CASES = (
    ("Argon2id m=19 MiB, t=2, p=1 (default)", crypto.KdfParams.argon2id(), {}),
    ("scrypt N=2^17, r=8, p=1 (KDF=scrypt)", crypto.KdfParams.scrypt(),
     {"SECURECHAT_KDF": "scrypt"}),
    ("Argon2id, KDF_CONCURRENCY=8", crypto.KdfParams.argon2id(),
     {"SECURECHAT_KDF_CONCURRENCY": "8"}),
)


def _messages_digest(database: Path) -> tuple[int, str]:
    """How many message rows there are, and a SHA-256 over all of them in order."""
    digest = hashlib.sha256()
    with closing(sqlite3.connect(database)) as db:
        rows = 0
        for row in db.execute("SELECT * FROM messages ORDER BY rowid"):
            digest.update(repr(row).encode())
            rows += 1
    return rows, digest.hexdigest()


def password_change(work: Path, sizes: Sequence[int], reps: int) -> tuple[Table, float]:
    """Time of POST /api/account/password at each history size, at the default KDF.

    Also the ratio of the p50 at the largest size to the one at the smallest.
    """
    p50: dict[int, float] = {}
    table = Table("9a. Password change: one key re-wrapped, whatever the history",
                  ["messages", "p50 ms", "min ms", "max ms", "message rows changed"])
    for size in sizes:
        instance = work / f"keys-{size}"
        app = securechat_app(instance, {})
        client, csrf = logged_in(app, USERNAME)
        conv = _expect(client.post("/api/conversations", json={}, headers=csrf),
                       201).get_json()["id"]
        fill_conversation(app, USERNAME, PASSWORD, conv, size)
        database = Path(app.config["DATABASE"])
        before = _messages_digest(database)
        passwords, times = [PASSWORD, SECOND], []
        for i in range(reps + 1):  # the first, untimed, also checkpoints the fill's WAL
            body = {"current_password": passwords[i % 2], "new_password": passwords[1 - i % 2]}
            start = time.perf_counter()
            _expect(client.post("/api/account/password", json=body, headers=csrf), 200)
            if i:
                times.append(time.perf_counter() - start)
        after = _messages_digest(database)
        if before[0] != size or after[0] != size:
            raise RuntimeError(f"expected {size} message rows, found {before[0]}/{after[0]}")
        p50[size] = percentile(times, 50)
        table.add(size, p50[size] * 1e3, min(times) * 1e3, max(times) * 1e3,
                  0 if before == after else "**changed**")
    table.notes += [
        f"{reps} changes per row after one untimed, through the Flask test client, at the "
        "default KDF (Argon2id 19 MiB, 2 passes): each change checks the current password "
        "(one KDF run), wraps the key under the new one (a second run), wraps it under a "
        "new recovery code (HKDF), commits, ends other sessions and checkpoints the WAL.",
        "Message rows changed: a SHA-256 over every row of the messages table before and "
        "after all the changes (0: identical).",
    ]
    return table, p50[max(sizes)] / p50[min(sizes)]


def _kdf_alone(params: crypto.KdfParams, reps: int) -> float:
    salt = os.urandom(16)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        crypto.derive_kek(PASSWORD, salt, params)
        times.append(time.perf_counter() - start)
    return percentile(times, 50)


def _concurrent_logins(url: str, users: Sequence[str]) -> list[float | None]:
    """Seconds each login took, or None for one refused as busy (503: no KDF slot soon)."""
    clients = [ChatClient(url, timeout=300) for _ in users]
    ready = threading.Barrier(len(users))

    def login(pair: tuple[ChatClient, str]) -> float | None:
        client, name = pair
        ready.wait()
        start = time.perf_counter()
        try:
            client.login(name, PASSWORD)
        except ApiError as e:
            if e.status != 503:
                raise
            return None
        return time.perf_counter() - start

    try:
        with ThreadPoolExecutor(len(users)) as pool:
            return list(pool.map(login, zip(clients, users, strict=True)))
    finally:
        for client in clients:
            client.close()


def login_by_kdf(work: Path, reps: int, concurrent: int) -> tuple[Table, dict[str, float]]:
    """Each KDF: time alone, a login through serve, and serve's peak RSS during N at once."""
    table = Table(f"9b. Login by KDF: time, and server memory with {concurrent} at once",
                  ["KDF", "KDF alone p50 ms", "login p50 ms", f"{concurrent} at once: "
                   "p50 ms", f"{concurrent} at once: max ms", "refused busy (503)",
                   "idle RSS MB", f"peak RSS during {concurrent} MB"])
    metrics: dict[str, float] = {}
    for n, (label, params, env) in enumerate(KDF_CASES):
        alone = _kdf_alone(params, reps)
        users = [f"{USERNAME}{i}" for i in range(concurrent)]
        served_env = clean_env({"SECURECHAT_RATELIMIT_ENABLED": "false", **env})
        with ServeProcess.securechat(work / f"login-{n}", work, served_env) as server, \
                ChatClient(server.url, timeout=300) as client:
            for name in users:
                client.register(name, PASSWORD)
            client.login(users[0], PASSWORD)  # untimed: opens the connection
            one = []
            for _ in range(reps):
                start = time.perf_counter()
                client.login(users[0], PASSWORD)
                one.append(time.perf_counter() - start)
            idle = memory_kib(server.pid)["VmRSS"]
            if not reset_peak(server.pid):
                raise RuntimeError("cannot reset VmHWM (/proc/PID/clear_refs): the peak "
                                   "would include start-up")
            results = _concurrent_logins(server.url, users)
            peak = memory_kib(server.pid)["VmHWM"]
        together = [r for r in results if r is not None] or [float("nan")]
        table.add(label, alone * 1e3, percentile(one, 50) * 1e3,
                  percentile(together, 50) * 1e3, max(together) * 1e3,
                  results.count(None), idle * _MB, peak * _MB)
        metrics[f"login_peak_mb_{n}"] = peak * _MB
    table.notes += [
        f"KDF alone: {reps} derivations in this process. Logins: `python -m securechat serve` "
        f"with rate limiting off, {reps} one at a time after one untimed, then {concurrent} "
        f"users logging in at the same moment from {concurrent} clients.",
        "Peak RSS: the serve process's VmHWM, reset (/proc/PID/clear_refs) just before the "
        f"{concurrent} logins. KDF_CONCURRENCY (default 2) bounds how many KDF runs hold "
        "their memory at once; the rest wait their turn, up to KDF_MAX_WAIT (2 s), then are "
        "refused with 503 + Retry-After (counted, and left out of the latencies).",
        "An account made under scrypt moves to Argon2id at its next login under the default "
        "settings (never back): these rows keep each KDF throughout.",
    ]
    return table, metrics
