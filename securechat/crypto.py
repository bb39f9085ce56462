"""AEAD sealing with associated data, key wrapping and key derivation.

Every ciphertext is ``version byte || 96-bit nonce || AES-256-GCM(ciphertext || tag)``.
The version byte is authenticated too, which leaves room for key rotation later.
Every failed decryption raises the one opaque :class:`DecryptionError`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import DecryptionError

__all__ = [
    "DecryptionError",
    "KdfParams",
    "csrf_token",
    "derive_kek",
    "new_key",
    "new_token",
    "open_",
    "seal",
    "session_wrap_key",
    "token_hash",
]

# The first byte of every ciphertext: its format (room for a key id and rotation later).
BLOB_VERSION = 1
_PREFIX = bytes([BLOB_VERSION])
_NONCE_LEN = 12
_TAG_LEN = 16
KEY_LEN = 32

# OWASP's password-storage minimum for scrypt is N=2^17, r=8, p=1 (128 MiB, ~0.3 s).
OWASP_MIN_LOG_N = 17


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters; ``log_n`` is log2(N)."""

    log_n: int = OWASP_MIN_LOG_N
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log_n <= 24 and 1 <= self.r <= 64 and 1 <= self.p <= 16):
            raise ValueError(f"unreasonable scrypt parameters: {self}")

    def encode(self) -> str:
        """Return the form stored beside each wrapped key, e.g. ``scrypt$17$8$1``."""
        return f"scrypt${self.log_n}${self.r}${self.p}"

    @classmethod
    def decode(cls, text: str) -> KdfParams:
        """Parse the stored form written by :meth:`encode`."""
        name, log_n, r, p = text.split("$")
        if name != "scrypt":
            raise ValueError(f"unknown KDF {name!r}")
        return cls(int(log_n), int(r), int(p))

    def weaker_than(self, other: KdfParams) -> bool:
        """True when this cost is below ``other`` in memory or time."""
        return self.log_n < other.log_n or self.r < other.r or self.p < other.p


def new_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def new_token() -> str:
    """Return a fresh random 256-bit session token, URL-safe."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``, bound to ``associated_data``."""
    _check_key(key)
    if not isinstance(plaintext, bytes) or not isinstance(associated_data, bytes):
        raise TypeError("plaintext and associated_data must be bytes")
    nonce = os.urandom(_NONCE_LEN)
    return _PREFIX + nonce + AESGCM(key).encrypt(nonce, plaintext, _PREFIX + associated_data)


def open_(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Decrypt ``blob`` sealed under ``key`` with the same ``associated_data``."""
    _check_key(key)
    if not isinstance(blob, bytes) or len(blob) < 1 + _NONCE_LEN + _TAG_LEN:
        raise DecryptionError()
    if blob[:1] != _PREFIX:
        raise DecryptionError()
    nonce, body = blob[1 : 1 + _NONCE_LEN], blob[1 + _NONCE_LEN :]
    try:
        return AESGCM(key).decrypt(nonce, body, _PREFIX + associated_data)
    except InvalidTag:
        raise DecryptionError() from None


def derive_kek(password: str, salt: bytes, params: KdfParams) -> bytes:
    """Derive a key-encryption key from a password with scrypt (memory-hard)."""
    kdf = Scrypt(salt=salt, length=KEY_LEN, n=2**params.log_n, r=params.r, p=params.p)
    return kdf.derive(password.encode("utf-8"))


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(secret)


def session_wrap_key(token: str) -> bytes:
    """Derive the key that wraps a user's data key for one session."""
    return _hkdf(token.encode("ascii"), b"securechat/v1/session-wrap")


def csrf_token(token: str) -> str:
    """Derive the session's CSRF token; it reveals nothing of the session token."""
    raw = _hkdf(token.encode("ascii"), b"securechat/v1/csrf")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> bytes:
    """Return what the database keeps of a session token: its SHA-256."""
    return hashlib.sha256(token.encode("ascii")).digest()


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError("key must be bytes")
    if len(key) != KEY_LEN:
        raise ValueError("key must be 32 bytes")
