"""Recovery codes: 128 random bits a person can write down, with a check character.

The code is Crockford base32 (no I, L, O or U; reading it back ignores case, spaces and
hyphens, and takes O for 0 and I or L for 1) followed by Crockford's check symbol (the
value mod 37), so a typo is caught before any lookup or key work. Shown in groups of four:
``7W3K-QX0D-…-M2*``. The server keeps only a wrap of the user's data key under a key
derived from the code (HKDF: 128 random bits need no memory-hard KDF).
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK_ALPHABET = ALPHABET + "*~$=U"
BITS = 128
DIGITS = 26  # ceil(128 / 5)
LENGTH = DIGITS + 1  # and the check symbol
GROUP = 4
_READ_AS = {"O": "0", "I": "1", "L": "1"}


def new_code() -> str:
    """A fresh code, formatted for people."""
    return format_code(secrets.randbits(BITS))


def format_code(value: int) -> str:
    """``value`` (a 128-bit number) as the grouped code with its check symbol."""
    digits = []
    for _ in range(DIGITS):
        value, digit = divmod(value, 32)
        digits.append(ALPHABET[digit])
    number = "".join(reversed(digits))
    raw = number + CHECK_ALPHABET[int(_value(number)) % 37]
    return "-".join(raw[i:i + GROUP] for i in range(0, len(raw), GROUP))


def parse_code(text: str) -> bytes:
    """The 16 secret bytes of a typed code; ValueError (saying what) for a mistyped one."""
    cleaned = "".join(_READ_AS.get(c, c) for c in text.upper() if c not in " -\t\n")
    if len(cleaned) != LENGTH:
        raise ValueError(f"A recovery code has {LENGTH} characters (ignoring hyphens and "
                         f"spaces); this one has {len(cleaned)}.")
    number, check = cleaned[:-1], cleaned[-1]
    if any(c not in ALPHABET for c in number) or check not in CHECK_ALPHABET:
        raise ValueError("That is not a recovery code: it holds characters a code never has.")
    value = _value(number)
    if CHECK_ALPHABET[value % 37] != check or value >> BITS:
        raise ValueError("That recovery code has a typo: its check character does not match.")
    return value.to_bytes(BITS // 8, "big")


def _value(number: str) -> int:
    value = 0
    for c in number:
        value = value * 32 + ALPHABET.index(c)
    return value


class RecoveryCode:
    """A recovery code that prints masked, so no notebook output or log line keeps it.

    ``repr``, ``str`` and the HTML form show only its shape (``••••-…-•••``);
    :meth:`reveal` returns the code itself, for the person to write down.
    """

    __slots__ = ("_code",)

    def __init__(self, code: str) -> None:
        self._code = code

    def reveal(self) -> str:
        """The code itself: write it down, never print it into a saved notebook."""
        return self._code

    @property
    def masked(self) -> str:
        """The code's shape with every character hidden."""
        return "".join("-" if c == "-" else "•" for c in self._code)

    def __repr__(self) -> str:
        return f"<RecoveryCode {self.masked}>"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<code>{self.masked}</code> (hidden)"
