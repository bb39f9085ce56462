"""Import: a securechat export (plain JSON or an encrypted archive) added as new conversations.

The whole document is checked before anything is written (a 400 names the first bad JSON
path). Then every conversation gets a new id and is sealed under the importing user's
key, written in batches while hidden (``pending``), and all are shown in one short
transaction with the ``import`` security event; a failure deletes what was written, so
nothing of a failed import is ever seen. The body may be up to ``MAX_IMPORT_BYTES`` on
this route alone (the production server lets it through too, in memory).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import archive, crypto, records, store
from . import capacity, eventlog, keys, messages
from .chat import MAX_TITLE
from .export import FORMAT, VERSION
from .http import IMPORT_BUSY, IMPORT_BUSY_MESSAGE, busy, fail, json_body
from .sessions import iso, login_required

bp = Blueprint("importer", __name__, url_prefix="/api/import")

BATCH = 500  # messages per write transaction: other writers wait for one batch at most
ROLES = ("user", "assistant")
# Base64 read a block at a time (a multiple of 4 characters): the archive's bytes are
# never all decoded at once.
_B64_BLOCK = 4 * 16384


@dataclass(frozen=True)
class Item:
    """One message to import: what it says, who said it, when, and whether it is whole."""

    role: str
    content: str
    created_at: str
    status: str


@dataclass(frozen=True)
class Imported:
    """One conversation to import."""

    title: str
    created_at: str
    starred: bool
    items: list[Item]


@bp.post("")
@login_required
def import_export() -> tuple[Response, int]:
    """Add the conversations of an export (or of an archive and its passphrase); 201 counts."""
    if request.environ.get(IMPORT_BUSY):
        busy(IMPORT_BUSY_MESSAGE, 5)  # serve left the body unread: every slot was taken
    # This route alone takes a whole export; others keep MAX_CONTENT_LENGTH.
    request.max_content_length = int(current_app.config["MAX_IMPORT_BYTES"])
    with capacity.import_slot():
        data = json_body()
        if "archive" in data:
            data = _opened(data)
        convs = parse(data)
        count = write(convs)
    return jsonify(imported=count, messages=sum(len(c.items) for c in convs)), 201


def _invalid_archive() -> NoReturn:
    fail(400, "invalid_archive", "Not a securechat archive, a damaged one, or the wrong "
         "passphrase.")


def _opened(data: dict[str, Any]) -> Any:
    """The export inside ``{"archive": base64, "passphrase"}``; any failure one 400."""
    blob, passphrase = data.get("archive"), data.get("passphrase")
    if set(data) != {"archive", "passphrase"} or not isinstance(blob, str) \
            or not isinstance(passphrase, str):
        fail(400, "invalid_field", "Send 'archive' (base64) and 'passphrase' only.")
    # An archive this server made (at its own KDF cost) always opens here.
    own = keys.kdf_params()
    memory = max(archive.MAX_MEMORY_KIB, own.memory_kib if own.name == "argon2id" else 0)
    passes = max(archive.MAX_PASSES, own.iterations if own.name == "argon2id" else 0)
    try:
        plain = b"".join(archive.decrypt(_base64(blob), passphrase, derive=keys.derive,
                                         max_memory_kib=memory, max_passes=passes))
        return json.loads(plain)
    except (archive.InvalidArchive, binascii.Error, ValueError, RecursionError):
        _invalid_archive()


def _base64(text: str) -> Iterator[bytes]:
    if len(text) % 4:
        raise binascii.Error("incomplete base64")
    for start in range(0, len(text), _B64_BLOCK):
        yield base64.b64decode(text[start:start + _B64_BLOCK], validate=True)


# --- checking the document -------------------------------------------------------------


def _bad(path: str, what: str) -> NoReturn:
    fail(400, "invalid_export", f"{path}: {what}")


def _text(value: Any, path: str, longest: int, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        _bad(path, "must be a string")
    if len(value) > longest or (not blank_ok and not value.strip()):
        _bad(path, f"must be 1-{longest} characters and not blank")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _bad(path, "must be valid Unicode text")
    return value


def _time(value: Any, path: str) -> str:
    """An ISO-8601 time with a zone, written as every stored time is."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            try:
                return iso(moment.timestamp())
            except (ValueError, OverflowError, OSError):
                pass  # in range as written, out of range in UTC (year 0 or 10000)
    _bad(path, "must be an ISO-8601 time with a zone, e.g. 2026-01-31T12:00:00Z")


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _bad(path, "must be an object")
    return value


def parse(data: Any) -> list[Imported]:
    """The conversations of an export, every field checked; 400 at the first bad path."""
    doc = _object(data, "(the body)")
    if doc.get("format") != FORMAT:
        _bad("format", f"must be '{FORMAT}'")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        _bad("version", f"must be {VERSION}")
    items = doc.get("conversations")
    if not isinstance(items, list):
        _bad("conversations", "must be a list")
    cfg = current_app.config
    # Counted before any is checked: an import too large costs no more than this.
    if len(items) > int(cfg["MAX_IMPORT_CONVERSATIONS"]):
        _bad("conversations", f"at most {cfg['MAX_IMPORT_CONVERSATIONS']} conversations "
             "in one import")
    total = sum(len(c["messages"]) for c in items
                if isinstance(c, dict) and isinstance(c.get("messages"), list))
    if total > int(cfg["MAX_IMPORT_MESSAGES"]):
        _bad("conversations", f"at most {cfg['MAX_IMPORT_MESSAGES']} messages in one import")
    longest = max(int(cfg["MAX_MESSAGE_CHARS"]), int(cfg["OPENAI_MAX_REPLY_CHARS"]))
    return [_conversation(item, f"conversations[{i}]", longest) for i, item in enumerate(items)]


def _conversation(value: Any, path: str, longest: int) -> Imported:
    conv = _object(value, path)
    title = _text(conv.get("title"), f"{path}.title", MAX_TITLE)
    created = _time(conv.get("created_at"), f"{path}.created_at")
    starred = conv.get("starred", False)
    if not isinstance(starred, bool):
        _bad(f"{path}.starred", "must be true or false")
    listed = conv.get("messages")
    if not isinstance(listed, list):
        _bad(f"{path}.messages", "must be a list")
    items = []
    for i, value in enumerate(listed):
        where = f"{path}.messages[{i}]"
        message = _object(value, where)
        role = message.get("role")
        if role not in ROLES:
            _bad(f"{where}.role", "must be 'user' or 'assistant'")
        content = _text(message.get("content"), f"{where}.content", longest)
        at = _time(message.get("created_at"), f"{where}.created_at")
        cut = message.get("incomplete", False)
        if not isinstance(cut, bool):
            _bad(f"{where}.incomplete", "must be true or false")
        items.append(Item(role, content, at, records.INCOMPLETE if cut else records.COMPLETE))
    return Imported(" ".join(title.split()), created, starred, items)


# --- writing ---------------------------------------------------------------------------


def write(convs: list[Imported]) -> int:
    """Seal and stage every conversation, then show them all at once; how many."""
    db, pending, started = store.get_db(), uuid.uuid4().hex, iso()
    try:
        for conv in convs:
            _stage(db, pending, started, conv)
        with store.transaction(db):
            shown = store.portable.reveal_import(db, g.user_id, pending, iso())
            eventlog.record("import")
    except BaseException:
        store.portable.discard_import(db, g.user_id, pending)
        store.scrub.now(db)
        raise
    return shown


def _stage(db: store.Database, pending: str, started: str, conv: Imported) -> None:
    conv_id = uuid.uuid4().hex
    head = store.Conversation(conv_id, messages.seal_title(conv_id, conv.title),
                              conv.created_at, started, conv.starred)
    store.portable.stage_conversation(db, g.user_id, pending, head, len(conv.items),
                                      _batch(conv_id, conv.items, 0))
    for start in range(BATCH, len(conv.items), BATCH):
        with store.transaction(db):
            store.portable.add_messages(db, conv_id, _batch(conv_id, conv.items, start))


def _batch(conv_id: str, items: list[Item], start: int) -> list[store.Message]:
    """Messages ``start`` to ``start + BATCH``, sealed (one batch of ciphertext at a time)."""
    return [_sealed(conv_id, position, items[position])
            for position in range(start, min(start + BATCH, len(items)))]


def _sealed(conv_id: str, position: int, item: Item) -> store.Message:
    ad = records.message_ad(g.user_id, conv_id, position, item.role, item.status)
    sealed = crypto.seal(g.data_key, item.content.encode("utf-8"), ad)
    return store.Message(uuid.uuid4().hex, position, item.role, sealed, item.created_at,
                         item.status)

