"""The package's exception hierarchy: every error a caller sees derives from SecureChatError."""

from __future__ import annotations


class SecureChatError(Exception):
    """Base class of every error securechat raises to Python callers."""


class ConfigError(SecureChatError):
    """The configuration is unsafe or invalid; nothing should be served."""


class DecryptionError(SecureChatError):
    """A ciphertext could not be opened: wrong key, tampered, truncated or moved.

    Deliberately says nothing about *which*, so an attacker learns nothing.
    """

    def __init__(self) -> None:
        super().__init__("decryption failed")


class ApiError(SecureChatError):
    """An error answered by the server (or raised while reaching it), with its JSON code.

    ``retry_after`` is how many seconds the server asked the client to wait (its
    ``Retry-After`` header, e.g. on a 429), or None when it did not say.
    """

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
