"""Search over the user's own titles and messages, decrypted inside the request only.

No index: each request opens titles and messages newest first (the newest conversation
first, each title, then its messages from the last), at most ``SEARCH_SCAN_LIMIT`` messages,
and says where to go on with an opaque ``next_before``. The work of one request is
bounded whatever the history's size, nothing searchable is stored, and the terms never
leave the request (a POST body: no access log or browser history holds them).
Matching ignores case and compatibility forms: both sides are NFKC-normalized and
case-folded; ``match`` is where the hit is in the snippet as it was written.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify

from .. import store
from . import messages
from .http import fail, json_body, no_nul, optional_string, string_field
from .sessions import login_required

bp = Blueprint("search", __name__, url_prefix="/api/search")

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_QUERY = 200
SNIPPET = 200
CONVERSATION_BATCH, MESSAGE_BATCH = 50, 200
START = -1  # a cursor's position for "this conversation, from its title"
_BLANKS = str.maketrans("\n\r\t\v\f", "     ")


# UAX #15's stream-safe bound: after this many characters that NFKC must reorder as one
# run, a combining grapheme joiner (a starter that changes no match) ends the run.
STREAM_SAFE, _CGJ = 30, "\u034f"


def _reordered(char: str) -> bool:
    """Whether ``char`` joins a run of marks NFKC reorders (it opens with a non-starter)."""
    return bool(unicodedata.combining(char)
                or unicodedata.combining(unicodedata.normalize("NFKD", char)[:1] or "a"))


@functools.cache
def _long_runs() -> re.Pattern[str]:
    """STREAM_SAFE such characters followed by one more (built once, on first use)."""
    marks = "".join(re.escape(chr(cp)) for cp in range(sys.maxunicode + 1)
                    if _reordered(chr(cp)))
    return re.compile(f"[{marks}]{{{STREAM_SAFE}}}(?=[{marks}])")


def fold(text: str) -> str:
    """What matching compares: NFKC, then case-folded.

    CPython reorders a run of combining marks in quadratic time (32,768 of them, one
    message, took 0.8 s): runs are cut first, so a search costs linear time in the text.
    """
    if not text.isascii():
        text = _long_runs().sub(lambda m: m.group() + _CGJ, text)
    return unicodedata.normalize("NFKC", text).casefold()


def _units(text: str) -> list[str]:
    """``text`` as characters, each with the combining marks that follow it."""
    units: list[str] = []
    for char in text:
        if units and unicodedata.combining(char):
            units[-1] += char
        else:
            units.append(char)
    return units


def find(text: str, needle: str) -> tuple[int, int] | None:
    """Where folded ``needle`` first occurs in ``text``: [start, end) in ``text`` itself."""
    if text.isascii():  # the common case: folding is lower-casing, positions stay
        at = text.lower().find(needle)
        return None if at < 0 else (at, at + len(needle))
    if needle not in fold(text):
        return None
    # Fold a character (and its marks) at a time, remembering where each came from.
    folded: list[str] = []
    origin: list[tuple[int, int]] = []
    pos = 0
    for unit in _units(text):
        piece = fold(unit)
        folded.append(piece)
        origin += [(pos, pos + len(unit))] * len(piece)
        pos += len(unit)
    at = "".join(folded).find(needle)
    if at < 0:
        return None  # only whole-text normalization joined it: no place to point at
    return origin[at][0], origin[at + len(needle) - 1][1]


def snippet(text: str, start: int, end: int) -> tuple[str, list[int]]:
    """At most SNIPPET characters of plain text around [start, end), and the match in it."""
    end = min(end, start + SNIPPET)
    room = SNIPPET - (end - start)
    first = max(0, start - room // 2)
    last = min(len(text), first + SNIPPET)
    first = max(0, last - SNIPPET)
    # Line breaks and tabs become spaces (one for one: the match stays where it is).
    return text[first:last].translate(_BLANKS), [start - first, end - first]


@dataclass
class Scan:
    """One request's search: what it looks for, what it found, what it may still open."""

    needle: str
    limit: int
    budget: int
    results: list[dict[str, Any]]

    def full(self) -> bool:
        return len(self.results) >= self.limit

    def hit(self, conv: store.Conversation, title: str, text: str,
            message: dict[str, Any] | None) -> None:
        found = find(text, self.needle)
        if found is None:
            return
        shown, match = snippet(text, *found)
        self.results.append({
            "conversation_id": conv.id, "title": title,
            "message_id": message["id"] if message else None,
            "role": message["role"] if message else None,
            "snippet": shown, "match": match,
            "created_at": message["created_at"] if message else conv.created_at})


Cursor = tuple[str, str, int]  # (created_at, conversation id, before position or START)


@bp.post("")
@login_required
def search() -> Response:
    """Titles and messages holding ``q``, newest first; ``next_before`` goes on from there."""
    data = json_body()
    unknown = sorted(set(data) - {"q", "limit", "before"})
    if unknown:
        fail(400, "invalid_field", f"Unknown field '{unknown[0]}': send 'q', 'limit', "
             "'before'.")
    query = string_field(data, "q").strip()
    if not query:
        fail(400, "invalid_query", "Say what to search for: 'q' is empty.")
    if len(query) > MAX_QUERY:
        fail(400, "invalid_query", f"'q' is at most {MAX_QUERY} characters.")
    limit = data.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        fail(400, "invalid_query", f"'limit' is 1-{MAX_LIMIT}.")
    cursor = _cursor(optional_string(data, "before"))
    needle = fold(query)
    if not needle.strip():
        fail(400, "invalid_query", "Say what to search for: 'q' is empty.")
    scan = Scan(needle, limit, int(current_app.config["SEARCH_SCAN_LIMIT"]), [])
    after = run(scan, cursor)
    return jsonify(results=scan.results,
                   next_before=None if after is None else _encode(after))


def run(scan: Scan, cursor: Cursor | None) -> Cursor | None:
    """Search from ``cursor`` (the newest when None); where the next page starts, or None."""
    db = store.get_db()
    queue: list[store.Conversation] = []
    before: tuple[str, str] | None = None
    position = START
    if cursor is not None:
        before, position = (cursor[0], cursor[1]), cursor[2]
        resumed = store.get_conversation(db, g.user_id, cursor[1])  # None: deleted since
        queue = [] if resumed is None else [resumed]
    while True:
        batch = store.portable.newest_conversations(db, g.user_id, before, CONVERSATION_BATCH)
        for conv in queue + batch:
            stop = _conversation(scan, db, conv, position)
            position = START
            if stop is not None:
                return _resume(db, conv, stop)
        if len(batch) < CONVERSATION_BATCH:
            return None
        queue, before = [], (batch[-1].created_at, batch[-1].id)


def _conversation(scan: Scan, db: store.Database, conv: store.Conversation,
                  position: int) -> int | None:
    """Scan one conversation from ``position``; the position to resume at, if it stopped."""
    title = messages.conversation_json(conv)["title"]
    if position == START:
        scan.hit(conv, title, title, None)
        if scan.full():
            return 2**62
        position = 2**62
    while position > 0:
        if scan.budget <= 0:
            return position
        rows = store.portable.messages_before(db, conv.id, position,
                                              min(MESSAGE_BATCH, scan.budget))
        if not rows:
            return None
        for row in rows:
            scan.budget -= 1
            message = messages.message_json(conv.id, row)
            scan.hit(conv, title, message["content"], message)
            position = row.position
            if scan.full() or scan.budget <= 0:
                return position
    return None


def _resume(db: store.Database, conv: store.Conversation, position: int) -> Cursor | None:
    """The cursor after stopping in ``conv`` before ``position`` (None when nothing is left)."""
    if position > 0:
        return conv.created_at, conv.id, position
    older = store.portable.newest_conversations(db, g.user_id, (conv.created_at, conv.id), 1)
    return None if not older else (older[0].created_at, older[0].id, START)


def _encode(cursor: Cursor) -> str:
    raw = json.dumps(list(cursor), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(text: str | None) -> Cursor | None:
    """The place a cursor names, or 400 for anything this server did not make."""
    if not text:
        return None
    try:
        updated, conv_id, position = json.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(updated, str) and isinstance(conv_id, str) and isinstance(position, int) \
                and not isinstance(position, bool) and START <= position <= 2**62 \
                and no_nul(updated, conv_id):
            return updated, conv_id, position
    except (ValueError, TypeError, RecursionError):
        pass
    fail(400, "invalid_query", "'before' is not a cursor this server gave out.")
