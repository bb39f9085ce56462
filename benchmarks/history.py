"""History pages: fill large conversations with properly sealed rows, then time one page."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from securechat import crypto, records, store
from securechat.server import sessions

from .inprocess import MESSAGE, PASSWORD, _expect, logged_in, securechat_app
from .report import Table, percentile

PAGE = 50
USERNAME = "history"


def data_key(user: store.User, password: str) -> bytes:
    """Unwrap a user's data key with their password (the same work a login does)."""
    kek = crypto.derive_kek(password, user.salt, crypto.KdfParams.decode(user.kdf))
    return crypto.open_(kek, user.wrapped_key, records.user_key_ad(user.id))


def _sealer(key: bytes, user_id: str, conv_id: str, role: str,
            text: str) -> Callable[[int], bytes]:
    def seal(position: int) -> bytes:
        # The record format the server reads: a row sealed otherwise fails to open.
        ad = records.message_ad(user_id, conv_id, position, role)
        return crypto.seal(key, text.encode("utf-8"), ad)

    return seal


def fill_conversation(app: Flask, username: str, password: str, conv_id: str,
                      count: int) -> None:
    """Append ``count`` sealed messages, alternately user and assistant, through ``store``."""
    with app.app_context():
        db = store.connect(app.config["DATABASE"])
        try:
            # A fixture, not the measured path: an fsync per row would take minutes.
            db.execute("PRAGMA synchronous=OFF")
            user = store.find_user(db, username)
            if user is None:
                raise RuntimeError(f"no user {username!r}")
            key, created = data_key(user, password), sessions.iso()
            for i in range(count):
                role = "user" if i % 2 == 0 else "assistant"
                store.append_message(db, user.id, conv_id, uuid.uuid4().hex, role,
                                     _sealer(key, user.id, conv_id, role, f"{i}: {MESSAGE}"),
                                     created)
        finally:
            db.close()


def _get_page(client: FlaskClient, conv_id: str, before: int | None, expected: int) -> float:
    """Seconds for one GET of a page; fails unless it holds ``expected`` messages."""
    query = {"limit": PAGE} if before is None else {"limit": PAGE, "before": before}
    start = time.perf_counter()
    r = _expect(client.get(f"/api/conversations/{conv_id}/messages", query_string=query), 200)
    seconds = time.perf_counter() - start
    if len(r.get_json()["messages"]) != expected:
        raise RuntimeError(f"page of {len(r.get_json()['messages'])}, not {expected}")
    return seconds


@dataclass
class HistoryRun:
    """What the history section measured, and where its largest conversation lives."""

    table: Table
    ratios: dict[str, float]
    instance: Path
    largest_conv: str
    largest_size: int


def history_pages(work: Path, sizes: Sequence[int], reps: int) -> HistoryRun:
    """Time the newest and a middle page of each conversation size."""
    instance = work / "history"
    # The default KDF: this user is also the one the login benchmark logs in as.
    app = securechat_app(instance, {})
    client, csrf = logged_in(app, USERNAME)
    table = Table(f"3. History pages (limit {PAGE}, Flask test client)",
                  ["messages in conversation", "page", "p50 ms", "p99 ms", "× smallest p50"])
    fill_seconds, convs = 0.0, {}
    for size in sorted(sizes):
        convs[size] = _expect(client.post("/api/conversations", json={"title": f"{size}"},
                                          headers=csrf), 201).get_json()["id"]
        start = time.perf_counter()
        fill_conversation(app, USERNAME, PASSWORD, convs[size], size)
        fill_seconds += time.perf_counter() - start
    cases = [(size, page, before, min(PAGE, size if before is None else before))
             for size in sorted(sizes)
             for page, before in (("newest", None), ("middle", size // 2))]
    ms: dict[tuple[int, str], list[float]] = {(c[0], c[1]): [] for c in cases}
    # Round-robin over every case, a few untimed rounds first: drift hits all rows alike.
    for round_ in range(reps + 5):
        for size, page, before, expected in cases:
            seconds = _get_page(client, convs[size], before, expected)
            if round_ >= 5:
                ms[(size, page)].append(seconds * 1000)
    p50 = {key: percentile(values, 50) for key, values in ms.items()}
    for (size, page), values in ms.items():
        table.add(size, page, p50[(size, page)], percentile(values, 99),
                  p50[(size, page)] / p50[(min(sizes), page)])
    total = sum(sizes)
    db_bytes = sum(f.stat().st_size for f in instance.glob("securechat.sqlite3*"))
    table.notes += [
        f"{reps} GETs per row, the rows taken in turn. Filled through securechat.store."
        f"append_message with rows sealed by securechat.crypto ({total:,} messages in "
        f"{fill_seconds:.1f} s); every page is decrypted by the API, which proves the rows valid.",
        f"Storage: {db_bytes / 2**20:.1f} MiB on disk for {total:,} messages of about "
        f"{len(MESSAGE) + 6} characters: {db_bytes / max(total, 1):.0f} bytes per message "
        "(13 version+nonce and 16 tag bytes of that are the encryption's).",
    ]
    big, small = max(sizes), min(sizes)
    ratios = {page: p50[(big, page)] / p50[(small, page)] for page in ("newest", "middle")}
    return HistoryRun(table, ratios, instance, convs[big], big)
