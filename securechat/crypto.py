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
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import DecryptionError

__all__ = [
    "DecryptionError",
    "KdfParams",
    "csrf_token",
    "derive_from_secret",
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

# OWASP's password-storage minimums: scrypt N=2^17, r=8, p=1 (128 MiB, ~0.3 s) and
# Argon2id m=19 MiB, t=2, p=1 (~30 ms here, a seventh of scrypt's memory).
OWASP_MIN_LOG_N = 17
OWASP_ARGON2_MEMORY_KIB, OWASP_ARGON2_ITERATIONS = 19 * 1024, 2
KDF_NAMES = ("argon2id", "scrypt")


@dataclass(frozen=True)
class KdfParams:
    """A password KDF and its cost: Argon2id (the default) or scrypt.

    Stored beside each wrapped key (:meth:`encode`), so a wrap made under one KDF or cost
    still opens after the configuration changes, and is upgraded at the next login.
    """

    name: str = "argon2id"
    memory_kib: int = OWASP_ARGON2_MEMORY_KIB  # Argon2id
    iterations: int = OWASP_ARGON2_ITERATIONS
    lanes: int = 1
    log_n: int = OWASP_MIN_LOG_N  # scrypt: N = 2**log_n
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        ok = (self.name == "argon2id" and 8 * self.lanes <= self.memory_kib <= 4 * 1024**2
              and 1 <= self.iterations <= 64 and 1 <= self.lanes <= 16) or (
              self.name == "scrypt" and 1 <= self.log_n <= 24 and 1 <= self.r <= 64
              and 1 <= self.p <= 16)
        if not ok:
            raise ValueError(f"unreasonable KDF parameters: {self.encode()}")

    @classmethod
    def scrypt(cls, log_n: int = OWASP_MIN_LOG_N, r: int = 8, p: int = 1) -> KdfParams:
        """scrypt with N = 2**log_n."""
        return cls("scrypt", log_n=log_n, r=r, p=p)

    @classmethod
    def argon2id(cls, memory_kib: int = OWASP_ARGON2_MEMORY_KIB,
                 iterations: int = OWASP_ARGON2_ITERATIONS, lanes: int = 1) -> KdfParams:
        """Argon2id with ``memory_kib`` KiB of memory and ``iterations`` passes."""
        return cls("argon2id", memory_kib=memory_kib, iterations=iterations, lanes=lanes)

    def encode(self) -> str:
        """The stored form, e.g. ``argon2id$m=19456,t=2,p=1`` or ``scrypt$17$8$1``."""
        if self.name == "scrypt":
            return f"scrypt${self.log_n}${self.r}${self.p}"
        return f"argon2id$m={self.memory_kib},t={self.iterations},p={self.lanes}"

    @classmethod
    def decode(cls, text: str) -> KdfParams:
        """Parse the stored form written by :meth:`encode`."""
        name, _, rest = text.partition("$")
        if name == "scrypt":
            log_n, r, p = rest.split("$")
            return cls.scrypt(int(log_n), int(r), int(p))
        if name == "argon2id":
            fields = dict(part.split("=") for part in rest.split(","))
            return cls.argon2id(int(fields["m"]), int(fields["t"]), int(fields["p"]))
        raise ValueError(f"unknown KDF {name!r}")

    def weaker_than(self, other: KdfParams) -> bool:
        """True when ``other`` should replace this wrap: a scrypt one, or a cheaper cost."""
        if self.name != other.name:
            return self.name == "scrypt" and other.name == "argon2id"
        if self.name == "scrypt":
            return self.log_n < other.log_n or self.r < other.r or self.p < other.p
        return self.memory_kib < other.memory_kib or self.iterations < other.iterations


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
    """Derive a key-encryption key from a password with a memory-hard KDF."""
    kdf: Argon2id | Scrypt
    if params.name == "argon2id":
        kdf = Argon2id(salt=salt, length=KEY_LEN, iterations=params.iterations,
                       lanes=params.lanes, memory_cost=params.memory_kib)
    else:
        kdf = Scrypt(salt=salt, length=KEY_LEN, n=2**params.log_n, r=params.r, p=params.p)
    return kdf.derive(password.encode("utf-8"))


def derive_from_secret(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """A key from a high-entropy secret (a recovery code): HKDF-SHA256, no stretching.

    128 random bits need no memory-hard KDF: guessing them is out of reach already.
    """
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info).derive(secret)


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
