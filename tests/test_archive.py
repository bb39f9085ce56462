"""The encrypted archive format: round trips, and every alteration fails as one error."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat import archive, crypto
from securechat.archive import SEGMENT, TAG, InvalidArchive

# A test may lower the KDF cost; what an archive made under the default holds is below.
CHEAP = crypto.KdfParams.argon2id(64, 1)
PASS = "a long passphrase for backups"


def sealed(data: bytes, passphrase: str = PASS, pieces: int = 1) -> bytes:
    step = max(1, len(data) // pieces)
    parts = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
    return b"".join(archive.encrypt(parts, passphrase, CHEAP))


def opened(blob: bytes, passphrase: str = PASS, step: int = 7001) -> bytes:
    return b"".join(archive.decrypt((blob[i:i + step] for i in range(0, len(blob), step)),
                                    passphrase))


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    end = blob.index(b"\n") + 1
    body = blob[end:]
    size = SEGMENT + TAG
    return blob[:end], [body[i:i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT,
                                  3 * SEGMENT + 17])
def test_round_trip_at_segment_edges(size: int) -> None:
    data = os.urandom(size)
    blob = sealed(data, pieces=5)
    assert opened(blob) == data
    assert opened(blob, step=1 << 20) == data
    head, segments = split(blob)
    # Full segments but the last, which may be full too; one even for nothing at all.
    assert len(segments) == max(1, -(-size // SEGMENT))
    assert all(len(s) == SEGMENT + TAG for s in segments[:-1])


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3 * SEGMENT // 2), st.integers(1, 9))
def test_round_trip_any_chunking(data: bytes, pieces: int) -> None:
    assert opened(sealed(data, pieces=pieces), step=999) == data


def test_the_header_describes_the_archive() -> None:
    params = crypto.KdfParams.argon2id()  # the default cost: what the server writes
    blob = b"".join(archive.encrypt([b"x"], PASS, params,
                                    derive=lambda p, s, k: bytes(32)))
    head = json.loads(blob.split(b"\n", 1)[0])
    assert head["format"] == "securechat-archive" and head["version"] == 1
    assert head["cipher"] == "AES-256-GCM" and head["segment"] == SEGMENT
    assert head["kdf"] == {"name": "argon2id", "memory_kib": 19 * 1024, "iterations": 2,
                           "lanes": 1}
    assert len(head["salt"]) == 24  # 16 random bytes, base64
    other = json.loads(b"".join(archive.encrypt([b"x"], PASS, params,
                                                derive=lambda p, s, k: bytes(32))
                                ).split(b"\n", 1)[0])
    assert other["salt"] != head["salt"]  # a fresh salt, hence a fresh key, each time


def test_scrypt_archives_open_too() -> None:
    blob = b"".join(archive.encrypt([b"data"], PASS, crypto.KdfParams.scrypt(10)))
    assert opened(blob) == b"data"


DATA = os.urandom(3 * SEGMENT + 100)


def _fails(blob: bytes, passphrase: str = PASS) -> None:
    with pytest.raises(InvalidArchive) as info:
        opened(blob, passphrase)
    assert str(info.value) == "invalid archive or wrong passphrase"


def test_wrong_passphrase() -> None:
    _fails(sealed(DATA), PASS + "!")


def test_truncated_at_a_segment_boundary() -> None:
    head, segments = split(sealed(DATA))
    for keep in range(len(segments)):
        _fails(head + b"".join(segments[:keep]))


def test_truncated_anywhere() -> None:
    blob = sealed(DATA)
    for cut in (1, 10, TAG, SEGMENT, SEGMENT + TAG + 1, len(blob) - 1):
        _fails(blob[:-cut])


def test_extended_after_the_end() -> None:
    blob = sealed(DATA)
    _fails(blob + b"\x00")
    head, segments = split(blob)
    _fails(blob + segments[0])


def test_segments_reordered_or_repeated() -> None:
    head, segments = split(sealed(DATA))
    _fails(head + segments[1] + segments[0] + b"".join(segments[2:]))
    _fails(head + segments[0] + segments[0] + b"".join(segments[2:]))


def test_a_flipped_byte_anywhere() -> None:
    blob = sealed(DATA)
    start = blob.index(b"\n") + 1
    for at in (start, start + 100, start + SEGMENT + TAG + 5, len(blob) - 1):
        changed = bytearray(blob)
        changed[at] ^= 1
        _fails(bytes(changed))


def test_header_tampered() -> None:
    blob = sealed(DATA)
    head, rest = blob.split(b"\n", 1)
    fields = json.loads(head)
    # The same KDF and salt, written otherwise: still the header bound to every segment.
    respaced = json.dumps(fields, separators=(", ", ": ")).encode()
    _fails(respaced + b"\n" + rest)
    for change in ({"version": 2}, {"format": "other"}, {"segment": 4096},
                   {"kdf": {**fields["kdf"], "iterations": 2}},
                   {"kdf": {**fields["kdf"], "memory_kib": 10**9}},
                   {"kdf": {"name": "md5"}}, {"salt": "!!"}, {"salt": ""}):
        _fails(json.dumps({**fields, **change}).encode() + b"\n" + rest)
    salt = bytearray(base64.b64decode(fields["salt"]))
    salt[0] ^= 1
    _fails(json.dumps({**fields, "salt": base64.b64encode(bytes(salt)).decode()}).encode()
           + b"\n" + rest)


@pytest.mark.parametrize("blob", [b"", b"{}", b"not json\n", b"{}\n", b"x" * 10000,
                                  b'{"format":"securechat-export"}\n'])
def test_not_an_archive(blob: bytes) -> None:
    _fails(blob)


def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError):
        archive.encrypt([b"x"], "", CHEAP)
    _fails(sealed(b"x"), "")


def test_a_reader_stops_before_segments_it_cannot_trust() -> None:
    # Segments are yielded as they open; the damage shows when it is reached.
    head, segments = split(sealed(DATA))
    changed = bytearray(segments[2])
    changed[0] ^= 1
    reader = archive.decrypt([head + b"".join(segments[:2]) + bytes(changed)
                              + b"".join(segments[3:])], PASS)
    assert next(reader) == DATA[:SEGMENT]
    assert next(reader) == DATA[SEGMENT:2 * SEGMENT]
    with pytest.raises(InvalidArchive):
        next(reader)


@pytest.mark.parametrize(("kdf", "accepted"), [
    ({"name": "argon2id", "memory_kib": 64 * 1024, "iterations": 4, "lanes": 1}, True),
    ({"name": "argon2id", "memory_kib": 64 * 1024 + 1, "iterations": 1, "lanes": 1}, False),
    ({"name": "argon2id", "memory_kib": 19 * 1024, "iterations": 5, "lanes": 1}, False),
    ({"name": "scrypt", "log_n": 17, "r": 8, "p": 2}, True),
    ({"name": "scrypt", "log_n": 18, "r": 8, "p": 1}, False),
    ({"name": "scrypt", "log_n": 17, "r": 8, "p": 3}, False),
])
def test_a_header_asking_more_than_the_cap_is_refused_before_any_kdf_work(
        kdf: dict[str, object], accepted: bool) -> None:
    """A hostile archive cannot make the reader spend more than ~7 logins' work per try."""
    head, rest = sealed(DATA).split(b"\n", 1)
    line = json.dumps({**json.loads(head), "kdf": kdf}).encode() + b"\n"
    asked: list[crypto.KdfParams] = []

    def derive(passphrase: str, salt: bytes, params: crypto.KdfParams) -> bytes:
        asked.append(params)
        return bytes(32)  # not the key: the first segment then fails to open

    with pytest.raises(InvalidArchive):
        b"".join(archive.decrypt([line + rest], PASS, derive=derive))
    assert bool(asked) == accepted
