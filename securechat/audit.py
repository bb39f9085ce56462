"""``python -m securechat audit verify``: check every account's security-log chain.

Each event's MAC covers the previous MAC and the event; the user row keeps the count and
a MAC over it and the last event's. A row altered, removed (from the middle or the end),
reordered or added, or a chain rebuilt by someone without the server secret, shows up here.
"""

from __future__ import annotations

import hmac

from flask import Flask

from . import store
from .server import eventlog


def verify(app: Flask) -> tuple[int, int, list[str]]:
    """(accounts checked, events checked, problems found — one sentence each)."""
    key = eventlog.chain_key(app.config["SECRET_KEY"])
    problems: list[str] = []
    events = 0
    with app.app_context():
        db = store.get_db()
        accounts = store.events.user_ids(db)
        for user_id, username in accounts:
            count, head = store.events.chain_head(db, user_id)
            rows = list(reversed(store.events.list_events(db, user_id, 2**31)))
            events += len(rows)
            problems += _check(key, user_id, username, count, head, rows)
    return len(accounts), events, problems


def _check(key: bytes, user_id: str, username: str, count: int, head: bytes | None,
           rows: list[store.events.Event]) -> list[str]:
    found, previous = [], b""
    for expected, event in enumerate(rows, start=1):
        if event.seq != expected:
            found.append(f"{username}: event {expected} is missing (the next is {event.seq})")
            break
        mac = eventlog.mac(key, user_id, previous, event.seq, event.type, event.at,
                           event.details)
        if not hmac.compare_digest(mac, event.mac):
            found.append(f"{username}: event {event.seq} ({event.type}) was altered, or the "
                         "chain was rebuilt")
            break
        previous = event.mac
    else:
        if len(rows) != count:
            found.append(f"{username}: the log holds {len(rows)} events but the account "
                         f"says {count}: the newest were deleted or some were added")
        elif count and not hmac.compare_digest(eventlog.head(key, user_id, count, previous),
                                               head or b""):
            found.append(f"{username}: the log's last event does not match the account's")
    return found
