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
    """An error the server answered: its HTTP status (400-599), JSON ``code`` and message.

    ``retry_after`` is how many seconds the server asked the client to wait (its
    ``Retry-After`` header, e.g. on a 429), or None when it did not say.
    """

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an ApiError is an HTTP error status, not {status}")
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class TransportError(SecureChatError):
    """No usable answer came back, so there is no HTTP status to report.

    ``code`` says what happened: ``unreachable`` (no connection), ``timeout`` (no answer in
    time), ``stream_broken`` (a reply stopped mid-way), ``bad_response`` (an answer that is
    not the API's: not JSON, not an event stream) or ``request_failed`` (anything else).
    Whether the server stored a message sent this way is unknown.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
