"""The encrypted archive: a passphrase-sealed export, streamed in both directions.

An archive is one line of JSON, the header, then the sealed segments::

    {"format":"securechat-archive","version":1,"cipher":"AES-256-GCM","segment":65536,
     "kdf":{"name":"argon2id","memory_kib":19456,"iterations":2,"lanes":1},"salt":"..."}\\n
    segment 0 || segment 1 || ... || last segment

The key is the KDF of the passphrase and the header's random salt (a fresh key per
archive). The plaintext is cut into 64 KiB segments, each sealed with AES-256-GCM under a
counter nonce (the segment's number, 12 bytes big-endian: no nonce repeats under one key)
with the whole header line and a last-segment flag as associated data. Every sealed
segment but the last is exactly ``segment + 16`` bytes; the last is shorter or as long,
so a reader knows it is the last when nothing follows it. Hence a flipped byte, segments
swapped or dropped, a stream cut at any point or extended after its end, a changed
header and a wrong passphrase all fail the same way: :class:`InvalidArchive`, never why.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import crypto
from .errors import SecureChatError

FORMAT, VERSION = "securechat-archive", 1
SEGMENT = 64 * 1024
TAG = 16
MAX_HEADER = 4096
# The KDF cost a reader accepts from a header: an archive names its own cost, and a
# hostile one could otherwise tie up a KDF slot with gigabytes and minutes per attempt.
# Argon2id up to 64 MiB and 4 passes (about 7x a login at the defaults, 19 MiB x 2);
# scrypt up to N=2^17, r=8 (128 MiB) with p <= 2. A reader may allow its own cost too.
MAX_MEMORY_KIB = 64 * 1024
MAX_PASSES = 4
MAX_SCRYPT_MEMORY_KIB = 128 * 1024
MAX_SCRYPT_P = 2

Derive = Callable[[str, bytes, crypto.KdfParams], bytes]


class InvalidArchive(SecureChatError):
    """Not an archive, a damaged or altered one, or the wrong passphrase: never which."""

    def __init__(self) -> None:
        super().__init__("invalid archive or wrong passphrase")


def header(params: crypto.KdfParams, salt: bytes) -> bytes:
    """The header line (with its newline) for an archive under ``params`` and ``salt``."""
    if params.name == "argon2id":
        kdf = {"name": "argon2id", "memory_kib": params.memory_kib,
               "iterations": params.iterations, "lanes": params.lanes}
    else:
        kdf = {"name": "scrypt", "log_n": params.log_n, "r": params.r, "p": params.p}
    fields = {"format": FORMAT, "version": VERSION, "cipher": "AES-256-GCM",
              "segment": SEGMENT, "kdf": kdf, "salt": base64.b64encode(salt).decode()}
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def encrypt(plaintext: Iterable[bytes], passphrase: str, params: crypto.KdfParams, *,
            derive: Derive = crypto.derive_kek) -> Iterator[bytes]:
    """The archive of ``plaintext`` (any chunking), as an iterator of bytes.

    The key is derived here, at once (so a caller's error or refusal comes before any
    byte); the segments are sealed as the iterator is read, one at a time.
    """
    if not isinstance(passphrase, str) or not passphrase:
        raise ValueError("a passphrase is required")
    salt = os.urandom(16)
    line = header(params, salt)
    return _sealed(AESGCM(derive(passphrase, salt, params)), line, plaintext)


def _sealed(aead: AESGCM, line: bytes, plaintext: Iterable[bytes]) -> Iterator[bytes]:
    yield line
    buffer, counter = bytearray(), 0
    for chunk in plaintext:
        buffer += chunk
        # Strictly more than a segment: the one kept back may turn out to be the last.
        while len(buffer) > SEGMENT:
            yield _seal(aead, line, counter, bytes(buffer[:SEGMENT]), last=False)
            del buffer[:SEGMENT]
            counter += 1
    yield _seal(aead, line, counter, bytes(buffer), last=True)


def _nonce(counter: int) -> bytes:
    if counter >= 2**64:
        raise ValueError("archive too long")
    return counter.to_bytes(12, "big")


def _ad(line: bytes, last: bool) -> bytes:
    return line + (b"\x01" if last else b"\x00")


def _seal(aead: AESGCM, line: bytes, counter: int, data: bytes, last: bool) -> bytes:
    return aead.encrypt(_nonce(counter), data, _ad(line, last))


def decrypt(archive: Iterable[bytes], passphrase: str, *, derive: Derive = crypto.derive_kek,
            max_memory_kib: int = MAX_MEMORY_KIB,
            max_passes: int = MAX_PASSES) -> Iterator[bytes]:
    """The plaintext of an archive (given as chunks of any size), segment by segment.

    The header is read and the key derived at once; then each segment is yielded as it
    is opened. A segment is only known to be whole once the stream ends properly: a
    reader must treat what it got as provisional until the iterator finishes without
    :class:`InvalidArchive`.
    """
    chunks = iter(archive)
    buffer = bytearray()
    while b"\n" not in buffer:
        if len(buffer) > MAX_HEADER:
            raise InvalidArchive()
        chunk = next(chunks, None)
        if chunk is None:
            raise InvalidArchive()
        buffer += chunk
    end = buffer.index(b"\n") + 1
    line, rest = bytes(buffer[:end]), bytes(buffer[end:])
    params, salt = _read_header(line, max_memory_kib, max_passes)
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidArchive()
    key = derive(passphrase, salt, params)
    return _opened(AESGCM(key), line, rest, chunks)


def _read_header(line: bytes, max_memory_kib: int,
                 max_passes: int) -> tuple[crypto.KdfParams, bytes]:
    """The KDF and salt a header names; InvalidArchive for anything else."""
    try:
        fields = json.loads(line)
        kdf = fields["kdf"]
        ok = (fields["format"] == FORMAT and fields["version"] == VERSION
              and fields["cipher"] == "AES-256-GCM" and fields["segment"] == SEGMENT)
        if kdf["name"] == "argon2id":
            params = crypto.KdfParams.argon2id(_int(kdf["memory_kib"]),
                                               _int(kdf["iterations"]), _int(kdf["lanes"]))
            ok = ok and params.memory_kib <= max_memory_kib and params.iterations <= max_passes
        elif kdf["name"] == "scrypt":
            params = crypto.KdfParams.scrypt(_int(kdf["log_n"]), _int(kdf["r"]), _int(kdf["p"]))
            ok = (ok and params.p <= MAX_SCRYPT_P and 128 * params.r * 2**params.log_n
                  <= max(max_memory_kib, MAX_SCRYPT_MEMORY_KIB) * 1024)
        else:
            ok = False
        salt = base64.b64decode(fields["salt"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise InvalidArchive() from None
    if not ok or not 16 <= len(salt) <= 64:
        raise InvalidArchive()
    return params, salt


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _opened(aead: AESGCM, line: bytes, rest: bytes,
            chunks: Iterator[bytes]) -> Iterator[bytes]:
    size = SEGMENT + TAG
    buffer, counter = bytearray(rest), 0
    ended = False
    while True:
        # One sealed segment and one byte more: a byte beyond it says it is not the last.
        while len(buffer) <= size and not ended:
            chunk = next(chunks, None)
            if chunk is None:
                ended = True
            else:
                buffer += chunk
        last = len(buffer) <= size
        sealed = bytes(buffer[:size])
        del buffer[:size]
        try:
            yield aead.decrypt(_nonce(counter), sealed, _ad(line, last))
        except InvalidTag:
            raise InvalidArchive() from None
        if last:
            return
        counter += 1
