"""AEAD sealing, key derivation and the one opaque decryption error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat import crypto, records
from securechat.errors import DecryptionError

KEY = bytes(range(32))
AD = records.record_ad("message", user="u1", conversation="c1", position=0, role="user")


@pytest.mark.parametrize("plaintext", [b"", b"x", b"hello world", "héllo ✓".encode(), b"\0" * 5000])
def test_round_trip(plaintext: bytes) -> None:
    assert crypto.open_(KEY, crypto.seal(KEY, plaintext, AD), AD) == plaintext


def test_nonce_is_fresh_each_time() -> None:
    assert crypto.seal(KEY, b"same", AD) != crypto.seal(KEY, b"same", AD)


def test_format_has_version_prefix_and_no_plaintext() -> None:
    blob = crypto.seal(KEY, b"secret marker", AD)
    assert blob[0] == crypto.BLOB_VERSION
    assert b"secret marker" not in blob
    assert len(blob) == 1 + 12 + len(b"secret marker") + 16


@pytest.mark.parametrize("index", [0, 1, 12, 13, -17, -1])
def test_tampered_byte_fails(index: int) -> None:
    blob = bytearray(crypto.seal(KEY, b"attack at dawn", AD))
    blob[index] ^= 0x01
    with pytest.raises(DecryptionError):
        crypto.open_(KEY, bytes(blob), AD)


@pytest.mark.parametrize("length", [0, 1, 12, 13, 28, 29, 41])
def test_truncated_fails(length: int) -> None:
    blob = crypto.seal(KEY, b"attack at dawn", AD)
    with pytest.raises(DecryptionError):
        crypto.open_(KEY, blob[:length], AD)


def test_wrong_key_fails() -> None:
    blob = crypto.seal(KEY, b"attack at dawn", AD)
    with pytest.raises(DecryptionError):
        crypto.open_(crypto.new_key(), blob, AD)


@pytest.mark.parametrize(
    "other",
    [
        {"user": "u2", "conversation": "c1", "position": 0, "role": "user"},
        {"user": "u1", "conversation": "c2", "position": 0, "role": "user"},
        {"user": "u1", "conversation": "c1", "position": 1, "role": "user"},
        {"user": "u1", "conversation": "c1", "position": 0, "role": "assistant"},
    ],
)
def test_ciphertext_moved_to_another_record_fails(other: dict[str, object]) -> None:
    blob = crypto.seal(KEY, b"attack at dawn", AD)
    with pytest.raises(DecryptionError):
        crypto.open_(KEY, blob, records.record_ad("message", **other))  # type: ignore[arg-type]


def test_kind_is_part_of_the_record() -> None:
    title_ad = records.record_ad("title", user="u1", conversation="c1")
    blob = crypto.seal(KEY, b"x", title_ad)
    with pytest.raises(DecryptionError):
        crypto.open_(KEY, blob, records.record_ad("message", user="u1", conversation="c1"))


def test_decryption_error_says_nothing_specific() -> None:
    errors = []
    for blob, key in [(b"short", KEY), (crypto.seal(KEY, b"x", AD), crypto.new_key())]:
        with pytest.raises(DecryptionError) as info:
            crypto.open_(key, blob, AD)
        errors.append(str(info.value))
    assert errors[0] == errors[1] == "decryption failed"


@pytest.mark.parametrize("key", [b"short", b"x" * 31, b"x" * 33])
def test_bad_key_length_is_a_value_error(key: bytes) -> None:
    with pytest.raises(ValueError):
        crypto.seal(key, b"x", AD)


def test_bad_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        crypto.seal("k" * 32, b"x", AD)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        crypto.seal(KEY, "text", AD)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=4096), user=st.text(max_size=40), position=st.integers(0, 10**9)
)
def test_property_round_trip(plaintext: bytes, user: str, position: int) -> None:
    ad = records.record_ad("message", user=user, conversation="c", position=position, role="user")
    key = crypto.new_key()
    assert crypto.open_(key, crypto.seal(key, plaintext, ad), ad) == plaintext


LOW_COSTS = [crypto.KdfParams.scrypt(10), crypto.KdfParams.argon2id(64, 1)]


@pytest.mark.parametrize("low", LOW_COSTS, ids=["scrypt", "argon2id"])
def test_kdf_is_deterministic_and_salted(low: crypto.KdfParams) -> None:
    a = crypto.derive_kek("correct horse", b"salt-1" * 3, low)
    assert a == crypto.derive_kek("correct horse", b"salt-1" * 3, low)
    assert a != crypto.derive_kek("correct horse", b"salt-2" * 3, low)
    assert a != crypto.derive_kek("correct horsf", b"salt-1" * 3, low)
    assert len(a) == 32
    other = LOW_COSTS[1 - LOW_COSTS.index(low)]
    assert a != crypto.derive_kek("correct horse", b"salt-1" * 3, other)


def test_kdf_default_is_argon2id_at_owasp_minimum_or_above() -> None:
    params = crypto.KdfParams()
    assert params.name == "argon2id"
    assert params.memory_kib >= 19 * 1024 and params.iterations >= 2 and params.lanes >= 1
    scrypt = crypto.KdfParams.scrypt()
    assert 2**scrypt.log_n >= 2**17 and scrypt.r >= 8 and scrypt.p >= 1


@pytest.mark.parametrize("params", [crypto.KdfParams.scrypt(18, 8, 2),
                                    crypto.KdfParams.argon2id(65536, 3, 2)])
def test_kdf_params_encode_round_trip(params: crypto.KdfParams) -> None:
    assert crypto.KdfParams.decode(params.encode()) == params


def test_weaker_means_scrypt_or_a_lower_cost_never_a_downgrade() -> None:
    scrypt, argon = crypto.KdfParams.scrypt, crypto.KdfParams.argon2id
    assert scrypt(16).weaker_than(scrypt(17)) and not scrypt(17).weaker_than(scrypt(17))
    assert argon(8192, 2).weaker_than(argon()) and argon(19456, 1).weaker_than(argon())
    assert not argon().weaker_than(argon())
    assert scrypt(22).weaker_than(argon())  # scrypt wraps move to Argon2id at login
    assert not argon(64, 1).weaker_than(scrypt())  # and never back


@pytest.mark.parametrize("text", ["argon2$1$2$3", "bcrypt$12", "scrypt$17$8", "argon2id$m=1"])
def test_unknown_or_broken_kdf_strings_refused(text: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        crypto.KdfParams.decode(text)


@pytest.mark.parametrize("make", [lambda: crypto.KdfParams.scrypt(40),
                                  lambda: crypto.KdfParams.argon2id(4, 1),
                                  lambda: crypto.KdfParams("md5")])
def test_unreasonable_kdf_costs_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_wrapped_data_key_opens_only_with_the_password() -> None:
    params, salt, data_key = crypto.KdfParams.argon2id(64, 1), b"s" * 16, crypto.new_key()
    ad = records.record_ad("user-key", user="u1")
    wrapped = crypto.seal(crypto.derive_kek("right password", salt, params), data_key, ad)
    assert crypto.open_(crypto.derive_kek("right password", salt, params), wrapped, ad) == data_key
    with pytest.raises(DecryptionError):
        crypto.open_(crypto.derive_kek("wrong password", salt, params), wrapped, ad)


def test_session_derivations_are_independent_of_each_other() -> None:
    token = crypto.new_token()
    wrap, csrf, digest = (
        crypto.session_wrap_key(token),
        crypto.csrf_token(token),
        crypto.token_hash(token),
    )
    assert len({wrap, csrf.encode(), digest, token.encode()}) == 4
    assert crypto.session_wrap_key(token) == wrap
    assert crypto.csrf_token(crypto.new_token()) != csrf
