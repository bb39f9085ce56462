"""In-process measurements: the chat round trip against the floor, crypto, and the KDF."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask
from flask.testing import FlaskClient

from securechat import create_app, crypto, records, store
from securechat.protocol import CSRF_HEADER
from securechat.settings import Settings

from .floor import create_floor_app
from .report import Table

PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark account's password
MESSAGE = "How private is this conversation, really? " * 2
# Lowered only where no KDF runs in the timed part (the send path never derives a key).
FAST_KDF = {"KDF_ARGON2_MEMORY_KIB": 64, "KDF_ARGON2_ITERATIONS": 1}
NO_RATE_LIMIT = {"RATELIMIT_ENABLED": False}
DEFAULT_KDF = Settings().kdf_params()


def timed(op: Callable[[], object], n: int, warmup: int = 20) -> float:
    """Seconds per call of ``op``, over ``n`` calls after ``warmup`` untimed ones."""
    for _ in range(min(warmup, n)):
        op()
    start = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - start) / n


def interleaved(ops: Mapping[str, Callable[[], object]], n: int,
                rounds: int = 10) -> dict[str, float]:
    """Seconds per call of each op, ``n`` calls each, taken in alternating rounds.

    Alternating spreads any drift of the machine (other work, disk flushes) over every op
    alike, so their ratio stays fair even when the absolute numbers move.
    """
    total = dict.fromkeys(ops, 0.0)
    per_round = [n // rounds + (1 if i < n % rounds else 0) for i in range(rounds)]
    for count in filter(None, per_round):
        for name, op in ops.items():
            total[name] += timed(op, count, warmup=0) * count
    return {name: seconds / n for name, seconds in total.items()}


def securechat_app(instance: Path, overrides: Mapping[str, Any]) -> Flask:
    """A securechat app on ``instance`` with rate limiting off plus ``overrides``."""
    return create_app({**NO_RATE_LIMIT, **overrides}, instance_path=instance)


def logged_in(app: Flask, username: str) -> tuple[FlaskClient, dict[str, str]]:
    """Register and log in ``username`` through the API; return the client and CSRF header."""
    client = app.test_client()
    _expect(client.post("/api/register", json={"username": username, "password": PASSWORD}),
            201)
    r = _expect(client.post("/api/login", json={"username": username, "password": PASSWORD}),
                200)
    return client, {CSRF_HEADER: r.get_json()["csrf_token"]}


def _expect(response: Any, status: int) -> Any:
    # Not an assert: a benchmark of failing requests must stop, even under python -O.
    if response.status_code != status:
        raise RuntimeError(f"expected {status}, got {response.status_code}: "
                           f"{response.get_data(as_text=True)[:200]}")
    return response


def chat_round_trip(work: Path, n: int) -> tuple[Table, dict[str, float]]:
    """Requests/s of the floor, then of securechat's health, session and send routes."""
    floor = create_floor_app().test_client()
    app = securechat_app(work / "inprocess", FAST_KDF)
    client, csrf = logged_in(app, "inprocess")
    conv = _expect(client.post("/api/conversations", json={}, headers=csrf), 201).get_json()
    path = f"/api/conversations/{conv['id']}/messages"
    cases = [
        ("plain Flask JSON echo (the floor)",
         lambda: _expect(floor.post("/echo", json={"content": MESSAGE}), 201)),
        ("securechat GET /api/health (app, no session)",
         lambda: _expect(client.get("/api/health"), 200)),
        ("securechat GET /api/session (session load only)",
         lambda: _expect(client.get("/api/session"), 200)),
        ("securechat POST send message (full round trip)",
         lambda: _expect(client.post(path, json={"content": MESSAGE}, headers=csrf), 201)),
    ]
    table = Table("1. In-process chat round trip (Flask test client)",
                  ["case", "requests/s", "µs/request", "% of floor"])
    for _, op in cases:
        for _ in range(20):  # warm-up: the first requests fill caches
            op()
    seconds = interleaved(dict(cases), n)
    base = seconds[cases[0][0]]
    for name, s in seconds.items():
        table.add(name, 1 / s, s * 1e6, 100 * base / s)
    ratio = base / seconds[cases[-1][0]]
    churn = timed(lambda: store.connect(app.config["DATABASE"]).close(), min(n, 500))
    commit = _commit_cost(Path(app.instance_path), min(n, 500))
    table.notes += [
        f"{n} sequential requests per case after 20 warm-up ones, the cases alternating in "
        f"10 rounds; message of {len(MESSAGE)} characters, echo responder, rate limiting off.",
        "Send = cookie check, session row + HKDF + unwrap, CSRF, seal and insert the message, "
        "open the messages the responder uses (echo: the one it echoes), seal and "
        "insert the reply; each insert is its own durable SQLite (WAL) transaction.",
        f"One durable write transaction (BEGIN IMMEDIATE … COMMIT, synchronous=FULL; measured "
        f"alone) takes {commit * 1e6:.0f} µs, and send makes two; opening a SQLite connection "
        f"takes {churn * 1e6:.0f} µs, which the pool saves on every request.",
        f"The KDF is lowered to Argon2id {FAST_KDF['KDF_ARGON2_MEMORY_KIB']} KiB, 1 pass, "
        "for this section's one registration and login: no KDF runs on the timed routes.",
    ]
    return table, {"inprocess_ratio": ratio}


def _commit_cost(folder: Path, n: int) -> float:
    """Seconds per small durable write transaction on this disk (each stored message pays one)."""
    conn = store.connect(str(folder / "commit-probe.sqlite3"))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (x BLOB)")

        def once() -> None:
            with store.transaction(conn):
                conn.execute("INSERT INTO probe VALUES (?)", (b"x" * 100,))

        return timed(once, n)
    finally:
        conn.close()


def crypto_per_message(n: int) -> Table:
    """Seal/open of a 1 KiB message against cryptography's AESGCM used directly."""
    key, data = crypto.new_key(), os.urandom(1024)
    raw = AESGCM(key)

    def ad() -> bytes:
        return records.message_ad("u" * 32, "c" * 32, 12345, "user")

    fixed_ad = ad()
    sealed, nonce = crypto.seal(key, data, fixed_ad), os.urandom(12)
    raw_ct = raw.encrypt(nonce, data, fixed_ad)
    token, user_id = crypto.new_token(), "u" * 32
    wrapped = crypto.seal(crypto.session_wrap_key(token), key,
                          records.session_key_ad(user_id))

    def session_load() -> None:
        # What sessions.load_session computes on every request, besides the database lookup.
        crypto.token_hash(token)
        crypto.open_(crypto.session_wrap_key(token), wrapped,
                     records.session_key_ad(user_id))
        crypto.csrf_token(token)

    cases = [
        ("raw AESGCM.encrypt (reused key object, random nonce)",
         lambda: raw.encrypt(os.urandom(12), data, fixed_ad), 0),
        ("securechat crypto.seal", lambda: crypto.seal(key, data, fixed_ad), 0),
        ("securechat crypto.seal + records.message_ad (as the server does)",
         lambda: crypto.seal(key, data, ad()), 0),
        ("raw AESGCM.decrypt (reused key object)",
         lambda: raw.decrypt(nonce, raw_ct, fixed_ad), 3),
        ("securechat crypto.open_", lambda: crypto.open_(key, sealed, fixed_ad), 3),
        ("securechat crypto.open_ + records.message_ad (as the server does)",
         lambda: crypto.open_(key, sealed, ad()), 3),
        ("per request: SHA-256 of the token, 2 HKDF, unwrap the data key", session_load,
         None),
    ]
    table = Table("4. Crypto per message (1 KiB, AES-256-GCM) and per request",
                  ["operation", "µs/op", "ops/s", "× raw"])
    results = [(name, timed(op, n, warmup=100), ref) for name, op, ref in cases]
    for name, s, ref in results:
        table.add(name, s * 1e6, 1 / s, None if ref is None else s / results[ref][1])
    table.notes.append(f"{n} calls each. securechat builds a new AESGCM object per call and "
                       "checks its arguments; records builds the JSON associated data.")
    return table


def kdf_time(reps: int) -> tuple[float, float]:
    """Mean and minimum seconds of one password derivation at the default cost."""
    salt = os.urandom(16)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        crypto.derive_kek(PASSWORD, salt, DEFAULT_KDF)
        times.append(time.perf_counter() - start)
    return sum(times) / len(times), min(times)


def kdf_mib(params: crypto.KdfParams = DEFAULT_KDF) -> int:
    """Memory of one derivation: Argon2id's m KiB, or scrypt's V array of 128·r·N bytes."""
    if params.name == "argon2id":
        return params.memory_kib // 1024
    return 128 * (2**params.log_n) * params.r // 2**20


def kdf_description(params: crypto.KdfParams = DEFAULT_KDF) -> str:
    """A KDF's parameters and memory, e.g. ``Argon2id m=19 MiB, t=2, p=1``."""
    if params.name == "argon2id":
        return (f"Argon2id m={kdf_mib(params)} MiB, t={params.iterations}, "
                f"p={params.lanes}")
    return f"scrypt N=2^{params.log_n}, r={params.r}, p={params.p} ({kdf_mib(params)} MiB)"

