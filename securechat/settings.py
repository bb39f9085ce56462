"""One typed Settings, built from its layers and validated once, before anything is served.

Layers, later wins: the defaults here → ``<instance>/config.json`` → ``SECURECHAT_*``
environment variables (and a ``.env`` file; only :func:`securechat.create_app_from_env`
and ``serve`` read those) → the mapping passed to ``create_app``. A wrong type, a value
out of range, an unparsable rate limit or URL raises :class:`ConfigError` naming the
setting (``serve`` prints it and exits 2); an unknown ``SECURECHAT_`` name is logged with
a suggestion and ignored (``SECURECHAT_TEST_*`` is reserved for tests).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

from .crypto import OWASP_ARGON2_ITERATIONS, OWASP_ARGON2_MEMORY_KIB, OWASP_MIN_LOG_N, KdfParams
from .errors import ConfigError
from .instance import CONFIG_FILE

log = logging.getLogger(__name__)

ENV_PREFIX = "SECURECHAT_"
TEST_PREFIX = ENV_PREFIX + "TEST_"  # reserved for tests: never a setting, never warned about
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _s(default: Any, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] = (), kind: str = "", layered: bool = True) -> Any:
    """A setting: its default and what a valid value is (bounds, choices, a special kind)."""
    return dataclasses.field(default=default, metadata={
        "lo": lo, "hi": hi, "choices": choices, "kind": kind, "layered": layered})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a securechat app, typed; see the README's configuration table."""

    # Storage and secrets (both filled from the instance folder when not given).
    SECRET_KEY: str | None = _s(None)
    DATABASE: str | None = _s(None)  # None: <instance>/securechat.sqlite3
    # The AI backend.
    RESPONDER: str = _s("echo", choices=("echo", "openai"))
    OPENAI_BASE_URL: str = _s("http://127.0.0.1:11434/v1", kind="url")
    OPENAI_MODEL: str = _s("llama3.2")
    OPENAI_API_KEY: str | None = _s(None)
    OPENAI_PROXY: str | None = _s(None, kind="url")  # the environment's proxies are ignored
    OPENAI_CONNECT_TIMEOUT: float = _s(5.0, lo=0.1, hi=300)
    OPENAI_READ_TIMEOUT: float = _s(60.0, lo=0.1, hi=3600)
    OPENAI_MAX_ATTEMPTS: int = _s(3, lo=1, hi=10)
    OPENAI_RETRY_BACKOFF: float = _s(0.5, lo=0, hi=60)
    OPENAI_MAX_REPLY_SECONDS: float = _s(300.0, lo=1, hi=86400)
    OPENAI_MAX_REPLY_CHARS: int = _s(32768, lo=1, hi=10_000_000)
    SYSTEM_PROMPT: str = _s("You are a helpful assistant in a private chat. Answer concisely.")
    HISTORY_WINDOW: int = _s(20, lo=1, hi=1000)
    HISTORY_MAX_CHARS: int = _s(24000, lo=1, hi=10_000_000)
    # Sessions.
    SESSION_IDLE_TIMEOUT: int = _s(1800, lo=1, hi=31 * 86400)
    SESSION_ABSOLUTE_TIMEOUT: int = _s(28800, lo=1, hi=366 * 86400)
    HTTPS: bool = _s(False)  # Secure + __Host- cookies, HSTS
    PURGE_INTERVAL: float = _s(60.0, lo=1, hi=86400)  # expired sessions leave the files
    # Rate limits (Flask-Limiter strings) and where they count.
    LOGIN_RATE_LIMIT: str = _s("5 per minute;100 per hour", kind="limit")
    LOGIN_SUCCESS_RATE_LIMIT: str = _s("60 per hour", kind="limit")
    RECOVERY_RATE_LIMIT: str = _s("5 per hour;20 per day", kind="limit")
    REGISTER_RATE_LIMIT: str = _s("20 per hour", kind="limit")
    CHAT_RATE_LIMIT: str = _s("30 per minute", kind="limit")
    CREATE_RATE_LIMIT: str = _s("60 per minute;1000 per day", kind="limit")
    # Export (either format), the encrypted archive and import share this budget per user.
    EXPORT_RATE_LIMIT: str = _s("30 per hour", kind="limit")
    SEARCH_RATE_LIMIT: str = _s("60 per minute", kind="limit")
    RATELIMIT_ENABLED: bool = _s(True)
    RATELIMIT_STORAGE_URI: str = _s("memory://", kind="storage")
    # With Redis: every key securechat writes there starts with this (apps may share one
    # Redis), and a slot a dead process held frees itself after LEASE_TTL seconds.
    REDIS_KEY_PREFIX: str = _s("securechat", kind="prefix")
    LEASE_TTL: float = _s(30.0, lo=1, hi=3600)
    PROXY_FIX: int = _s(0, lo=0, hi=10)  # trusted reverse proxies in front
    # Concurrency caps and bounds of work.
    MAX_STREAMS: int = _s(1500, lo=1, hi=100_000)
    MAX_STREAMS_PER_USER: int = _s(3, lo=1, hi=1000)
    # A streamed reply's deltas arriving within this many seconds of each other leave as
    # one event (the first never waits); 0 sends each chunk as it comes.
    STREAM_COALESCE_WINDOW: float = _s(0.01, lo=0, hi=0.05)
    MAX_SESSIONS_PER_USER: int = _s(20, lo=1, hi=10_000)
    MAX_CONNECTIONS: int = _s(2000, lo=1, hi=1_000_000)  # open at once, per `serve` worker
    # Under `serve`: a whole request (line, headers, body) must arrive in REQUEST_TIMEOUT
    # seconds, and a client that reads nothing for WRITE_TIMEOUT seconds is dropped.
    REQUEST_TIMEOUT: float = _s(30.0, lo=0.5, hi=3600)
    WRITE_TIMEOUT: float = _s(60.0, lo=0.5, hi=3600)
    MAX_CONNECTIONS_PER_ADDRESS: int = _s(32, lo=0, hi=100_000)  # 0: no cap
    MAX_CONTENT_LENGTH: int = _s(1024 * 1024, lo=64, hi=1024**3)
    # POST /api/import alone takes bodies up to this (a whole export), held in memory.
    MAX_IMPORT_BYTES: int = _s(64 * 1024 * 1024, lo=1024, hi=1024**3)
    # Imports one process reads and writes at once: each holds its body and the parsed
    # export in memory (measured: ~6x the body), so more wait their turn (503).
    IMPORT_CONCURRENCY: int = _s(1, lo=1, hi=64)
    # What one import may add: checking and sealing run on the server's event loop
    # (measured: ~5 us a message), and rows are storage someone else pays for.
    MAX_IMPORT_CONVERSATIONS: int = _s(10_000, lo=1, hi=1_000_000)
    MAX_IMPORT_MESSAGES: int = _s(200_000, lo=1, hi=10_000_000)
    # Messages one search request decrypts at most; the next page goes on from there.
    SEARCH_SCAN_LIMIT: int = _s(5000, lo=100, hi=10_000_000)
    MAX_MESSAGE_CHARS: int = _s(32768, lo=1, hi=1_000_000)
    # The password KDF: Argon2id (OWASP's minimum: 19 MiB, 2 passes) or scrypt with
    # N = 2**KDF_LOG_N (OWASP's minimum is 17); lower only for tests and demos. Then how
    # many runs at once, how many may wait, and for how long.
    KDF: str = _s("argon2id", choices=("argon2id", "scrypt"))
    KDF_ARGON2_MEMORY_KIB: int = _s(19 * 1024, lo=8, hi=4 * 1024**2)
    KDF_ARGON2_ITERATIONS: int = _s(2, lo=1, hi=64)
    KDF_LOG_N: int = _s(17, lo=10, hi=22)
    KDF_R: int = _s(8, lo=1, hi=64)
    KDF_P: int = _s(1, lo=1, hi=16)
    KDF_CONCURRENCY: int = _s(2, lo=1, hi=256)
    KDF_QUEUE: int = _s(8, lo=0, hi=10_000)
    KDF_MAX_WAIT: float = _s(2.0, lo=0, hi=60)
    # Not settings a deployment sets: debug can never be on; tests inject a clock.
    DEBUG: bool = _s(False, layered=False)
    CLOCK: Callable[[], float] | None = _s(None, layered=False)

    def weaknesses(self) -> list[str]:
        """What this configuration allows that a deployment should not (logged at start)."""
        # Allowed: tests and demos need logins in milliseconds. Never for real use.
        found = []
        if self.KDF == "scrypt" and self.KDF_LOG_N < OWASP_MIN_LOG_N:
            found.append(f"KDF_LOG_N={self.KDF_LOG_N} is below OWASP's minimum "
                         f"({OWASP_MIN_LOG_N}): for tests and demos only")
        if self.KDF == "argon2id" and (self.KDF_ARGON2_MEMORY_KIB < OWASP_ARGON2_MEMORY_KIB
                                       or self.KDF_ARGON2_ITERATIONS < OWASP_ARGON2_ITERATIONS):
            found.append(f"Argon2id with {self.KDF_ARGON2_MEMORY_KIB} KiB and "
                         f"{self.KDF_ARGON2_ITERATIONS} passes is below OWASP's minimum "
                         f"({OWASP_ARGON2_MEMORY_KIB} KiB, {OWASP_ARGON2_ITERATIONS} passes): "
                         "for tests and demos only")
        return found

    def kdf_params(self) -> KdfParams:
        """The password KDF and its cost, as the crypto module takes them."""
        if self.KDF == "scrypt":
            return KdfParams.scrypt(self.KDF_LOG_N, self.KDF_R, self.KDF_P)
        return KdfParams.argon2id(self.KDF_ARGON2_MEMORY_KIB, self.KDF_ARGON2_ITERATIONS)

    def as_config(self) -> dict[str, Any]:
        """The settings as Flask config keys (the values themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TYPES = typing.get_type_hints(Settings)


def load(instance: Path, overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings: defaults → config.json → ``environ`` → overrides.

    ``environ`` holds ``SECURECHAT_*`` variables (None: the environment is not read).
    """
    values: dict[str, Any] = {}
    values.update(_from_file(instance / CONFIG_FILE))
    values.update(_from_environ(environ or {}))
    for name, value in (overrides or {}).items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}{_suggestion(name)}")
        values[name] = _checked(name, value)
    return _build(values)


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of settings")
    found = {}
    for name, value in data.items():
        if name in _FIELDS and _FIELDS[name].metadata["layered"]:
            found[name] = _checked(name, value, where=f" in {path.name}")
        else:
            log.warning("ignoring unknown setting %r in %s%s", name, path, _suggestion(name))
    return found


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(TEST_PREFIX) or raw is None:
            continue
        name = key[len(ENV_PREFIX):]
        if name == "INSTANCE":
            continue  # where the instance is, read by create_app_from_env
        if name == "DEBUG":
            raise ConfigError(NEVER_DEBUG)
        if name not in _FIELDS or not _FIELDS[name].metadata["layered"]:
            log.warning("ignoring unknown setting %s%s", key,
                        _suggestion(name, prefix=ENV_PREFIX))
            continue
        found[name] = _checked(name, _parse(name, raw), where=f" (from {key})")
    return found


NEVER_DEBUG = ("securechat never runs in debug mode: werkzeug's debugger lets anyone who "
                "reaches it run code on the server")


def _parse(name: str, raw: str) -> Any:
    """Text from the environment as the setting's type."""
    kind = _TYPES[name]
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), not {raw!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    # Text settings: an empty value means "none" where none is allowed.
    return None if text == "" and _optional(name) else raw


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_TYPES[name])


def _checked(name: str, value: Any, where: str = "") -> Any:
    """``value`` if it fits the setting ``name``, else ConfigError saying why."""
    meta, kind = _FIELDS[name].metadata, _TYPES[name]
    if name == "DEBUG" and value is not False:
        raise ConfigError(NEVER_DEBUG)
    if value is None and _optional(name):
        return None
    if name == "CLOCK":
        if not callable(value):
            raise ConfigError("CLOCK must be a function returning seconds")
        return value
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{name}{where} must be {_NAMES.get(base, base.__name__)}, "
                          f"not {value!r}")
    if meta["lo"] is not None and not meta["lo"] <= value <= meta["hi"]:
        raise ConfigError(f"{name}{where} must be between {_number(meta['lo'])} and "
                          f"{_number(meta['hi'])}, not {value!r}")
    if meta["choices"] and value.lower() not in meta["choices"]:
        raise ConfigError(f"{name}{where} must be one of {', '.join(meta['choices'])}, "
                          f"not {value!r}")
    _KINDS.get(meta["kind"], _no_check)(name + where, value)
    return value.lower() if meta["choices"] else value


def _number(bound: float) -> str:
    return f"{bound:,}" if float(bound).is_integer() else str(bound)


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _no_check(name: str, value: Any) -> None:
    """No check beyond the type."""


def _limit(name: str, value: str) -> None:
    try:
        if not parse_many(value):
            raise ValueError("no limit")
    except ValueError:
        raise ConfigError(f"{name} is not a rate limit such as '5 per minute': "
                          f"{value!r}") from None


def _url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL, not {value!r}")


STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


def _storage(name: str, value: str) -> None:
    # The value is never echoed: a Redis URL may carry a password.
    parts = urlsplit(value)
    if parts.scheme not in STORAGE_SCHEMES:
        # Only a scheme before "://" is named: Python 3.10 reads "host:port" as scheme "host".
        given = value.split("://", 1)[0] if "://" in value else ""
        shown = given if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", given) else "scheme-less"
        raise ConfigError(f"{name} must be memory:// or a Redis URL (redis://, rediss://, "
                          f"redis+unix://), not a {shown} URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number") from None
    if parts.scheme in ("redis", "rediss") and not parts.hostname:
        raise ConfigError(f"{name} must name a host, as in redis://host:6379/0")
    if parts.scheme in ("redis", "rediss") and not re.fullmatch(r"/?[0-9]*", parts.path):
        # redis-py would quietly use database 0 for anything else.
        raise ConfigError(f"{name} must end in a database number, as in redis://host:6379/0")
    if parts.scheme == "redis+unix" and not parts.path:
        raise ConfigError(f"{name} must name a socket, as in redis+unix:///run/redis.sock")


_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _prefix(name: str, value: str) -> None:
    if not _PREFIX.fullmatch(value):
        raise ConfigError(f"{name} must be 1-64 of A-Z a-z 0-9 _ . : -, not {value!r}")


_KINDS: dict[str, Callable[[str, Any], None]] = {
    "limit": _limit, "url": _url, "storage": _storage, "prefix": _prefix}


def _build(values: dict[str, Any]) -> Settings:
    settings = Settings(**values)
    try:
        settings.kdf_params()
    except ValueError as e:
        raise ConfigError(f"the KDF settings are unusable: {e}") from None
    return settings


def _suggestion(name: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(_FIELDS), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
