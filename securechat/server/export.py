"""Export: the user's whole history as JSON or Markdown, or sealed in an encrypted archive.

Streamed: conversations and messages are read and opened a batch at a time while the
response is written, so a user with 100,000 messages never needs 100,000 messages of
memory, and a slow reader holds one batch (the server waits for it, writing nothing to
disk). An export is the user's own plaintext; the archive is the same JSON under a
passphrase (:mod:`securechat.archive`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context

from .. import archive, store
from . import eventlog, keys, messages
from .http import fail, json_body, string_field
from .sessions import check_csrf, iso, login_required

log = logging.getLogger(__name__)

bp = Blueprint("export", __name__, url_prefix="/api/export")

FORMAT, VERSION = "securechat-export", 1
CONVERSATION_BATCH, MESSAGE_BATCH = 50, 200
FORMATS = {"json": ("application/json", "json"), "markdown": ("text/markdown", "md")}


@bp.get("")
@login_required
def export() -> Response:
    """The whole history as a JSON or Markdown attachment, streamed."""
    # A GET, yet it needs the CSRF header: no other site may make a browser download it.
    check_csrf(always=True)
    chosen = request.args.get("format", "json")
    if chosen not in FORMATS:
        fail(400, "invalid_query", "'format' is json or markdown.")
    eventlog.record("export")
    body = json_chunks() if chosen == "json" else markdown_chunks()
    mimetype, suffix = FORMATS[chosen]
    return attachment(body, f"{mimetype}; charset=utf-8", suffix)


@bp.post("/archive")
@login_required
def export_archive() -> Response:
    """The JSON export sealed under a passphrase (KDF, then AES-GCM segments), streamed."""
    data = json_body()
    unknown = sorted(set(data) - {"passphrase"})
    if unknown:
        fail(400, "invalid_field", f"Unknown field '{unknown[0]}': send 'passphrase' only.")
    passphrase = string_field(data, "passphrase")
    keys.check_new_password(passphrase, "passphrase")
    # The KDF runs now, in a KDF slot (503 when none frees soon), before any byte is sent.
    sealed = archive.encrypt(json_chunks(), passphrase, keys.kdf_params(), derive=keys.derive)
    eventlog.record("export")
    return attachment(sealed, "application/octet-stream", "scarchive")


def attachment(body: Iterator[bytes], mimetype: str, suffix: str) -> Response:
    """A streamed download named after the day, ended abruptly if the stream fails."""
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    response = Response(stream_with_context(_guarded(body)), mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="securechat-export-{day}.{suffix}"')
    response.headers["X-Accel-Buffering"] = "no"  # a proxy must not buffer it either
    return response


def _guarded(body: Iterator[bytes]) -> Iterator[bytes]:
    # A failure mid-way (a record that does not open, the database gone) cuts the
    # connection: the end of a whole export (its last line, its closing bracket) is never
    # written, so a cut one is never taken for a whole one.
    try:
        yield from body
    except Exception as e:
        log.error("an export failed mid-way: %s", type(e).__name__)
        raise


def conversations() -> Iterator[store.Conversation]:
    """Every conversation of the user, oldest first, read a batch at a time."""
    db, after = store.get_db(), None
    while True:
        batch = store.portable.conversations_by_age(db, g.user_id, after, CONVERSATION_BATCH)
        yield from batch
        if len(batch) < CONVERSATION_BATCH:
            return
        after = (batch[-1].created_at, batch[-1].id)


def message_batches(conv_id: str) -> Iterator[list[dict[str, Any]]]:
    """A conversation's messages, oldest first, opened a batch at a time, as exported."""
    db, after = store.get_db(), -1
    while True:
        rows = store.portable.messages_after(db, conv_id, after, MESSAGE_BATCH)
        if rows:
            yield [exported(messages.message_json(conv_id, row)) for row in rows]
        if len(rows) < MESSAGE_BATCH:
            return
        after = rows[-1].position


def exported(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the export shows it: role, content, time, and ``incomplete`` if cut."""
    item = {"role": message["role"], "content": message["content"],
            "created_at": message["created_at"]}
    if message.get("incomplete"):
        item["incomplete"] = True
    return item


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_chunks() -> Iterator[bytes]:
    """The JSON export (DESIGN.md's format, version 1), one batch of messages a chunk."""
    head = {"format": FORMAT, "version": VERSION, "username": g.username, "exported_at": iso()}
    yield (_dumps(head)[:-1] + ',"conversations":[').encode()
    for n, conv in enumerate(conversations()):
        shown = messages.conversation_json(conv)
        item = {k: shown[k] for k in ("id", "title", "created_at", "starred")}
        text = ("," if n else "") + _dumps(item)[:-1] + ',"messages":['
        first = True
        for batch in message_batches(conv.id):
            text += ("" if first else ",") + ",".join(_dumps(m) for m in batch)
            first = False
            yield text.encode()
            text = ""
        yield (text + "]}").encode()
    # The closing brackets come last: a cut export is never valid JSON.
    yield b"]}\n"


_TICKS = re.compile(r"`+")


def fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text`` (at least three)."""
    longest = max((len(run) for run in _TICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


# What a heading's text could otherwise turn into markup: HTML and entities, links and
# images, emphasis, code spans, tables. Backslash-escaped, each shows as itself.
_MARKUP = re.compile(r"([\\`*_\[\]<>&!~|#])")


def heading_text(title: str) -> str:
    """A title as one line of literal Markdown text (a hostile title stays text)."""
    return _MARKUP.sub(r"\\\1", " ".join(title.split()))


def markdown_chunks() -> Iterator[bytes]:
    """The Markdown export: every message verbatim in a fence; a last line once whole."""
    yield (f"# securechat export\n\n- user: {g.username}\n- exported: {iso()}\n"
           "- each message is quoted verbatim in a code fence\n").encode()
    count = total = 0
    for conv in conversations():
        shown = messages.conversation_json(conv)
        title = heading_text(shown["title"])
        star = ", starred" if conv.starred else ""
        text = f"\n## {title}\n\n- created: {conv.created_at}{star}\n"
        for batch in message_batches(conv.id):
            for m in batch:
                cut = " (incomplete)" if m.get("incomplete") else ""
                ticks = fence(m["content"])
                text += (f"\n### {m['role']} · {m['created_at']}{cut}\n\n{ticks}text\n"
                         f"{m['content']}\n{ticks}\n")
            total += len(batch)
            yield text.encode()
            text = ""
        count += 1
        if text:
            yield text.encode()
    yield f"\n<!-- export complete: {count} conversations, {total} messages -->\n".encode()
