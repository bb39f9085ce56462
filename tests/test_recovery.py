"""The recovery code's format: what people write down and type back."""

from __future__ import annotations

import re
import secrets

import pytest

from securechat import recovery

SHAPE = re.compile(r"(?:[0-9A-HJKMNP-TV-Z]{4}-){6}[0-9A-HJKMNP-TV-Z]{2}[0-9A-HJKMNP-TV-Z*~$=U]")


def test_a_new_code_is_grouped_crockford_with_a_check_symbol() -> None:
    codes = {recovery.new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert SHAPE.fullmatch(code), code
        assert len(recovery.parse_code(code)) == 16


@pytest.mark.parametrize("value", [0, 1, 2**128 - 1, 37, 2**127])
def test_format_and_parse_round_trip(value: int) -> None:
    code = recovery.format_code(value)
    assert recovery.parse_code(code) == value.to_bytes(16, "big")


def test_case_spaces_hyphens_and_look_alikes_are_forgiven() -> None:
    value = secrets.randbits(128)
    code = recovery.format_code(value)
    expected = value.to_bytes(16, "big")
    assert recovery.parse_code(code.lower()) == expected
    assert recovery.parse_code(" ".join(code.split("-"))) == expected
    assert recovery.parse_code(code.replace("-", "")) == expected
    # Crockford reads O as 0 and I, L as 1: a code is never misread for a look-alike.
    zeros = recovery.format_code(0)
    assert recovery.parse_code(zeros.replace("0", "O")) == bytes(16)
    ones = recovery.format_code(int("1" * 26, 32))
    assert recovery.parse_code(ones.replace("1", "l")) == recovery.parse_code(ones)


def test_every_single_character_typo_is_caught() -> None:
    """Mod 37 catches any one wrong symbol and any swap of two neighbours."""
    code = recovery.format_code(secrets.randbits(128)).replace("-", "")
    for i, right in enumerate(code[:-1]):
        for wrong in recovery.ALPHABET:
            if wrong != right:
                typo = code[:i] + wrong + code[i + 1:]
                with pytest.raises(ValueError, match="typo"):
                    recovery.parse_code(typo)
    for i in range(len(code) - 2):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2:]
            with pytest.raises(ValueError, match="typo"):
                recovery.parse_code(swapped)


@pytest.mark.parametrize(("typed", "says"), [
    ("", "has 27 characters"),
    ("ABCD-EFGH", "this one has 8"),
    ("ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-23456", "this one has 29"),
    ("ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2!*", "characters a code never has"),
    ("ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2U5", "characters a code never has"),
])
def test_malformed_codes_say_what_is_wrong(typed: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        recovery.parse_code(typed)


def test_a_value_past_128_bits_is_refused() -> None:
    """26 base32 digits hold 130 bits; the two extra ones must be zero."""
    digits = "Z" * 26
    value = int(recovery._value(digits))
    code = digits + recovery.CHECK_ALPHABET[value % 37]
    with pytest.raises(ValueError):
        recovery.parse_code(code)
