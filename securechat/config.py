"""Build the app's configuration: defaults → instance folder → environment/.env → overrides.

The server secret is never a literal: it is read from ``SECURECHAT_SECRET_KEY`` or
generated once into ``<instance>/secret_key`` (mode 0600, folder 0700). Short or
published secrets are refused with :class:`ConfigError`.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .errors import ConfigError

ENV_PREFIX = "SECURECHAT_"
MIN_SECRET_BYTES = 32
SECRET_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = "config.json"

# Values copied from tutorials and framework docs; anyone can forge cookies with them.
PUBLISHED_SECRETS = frozenset(
    {
        "your-secret-key-here",
        "your-secret-key",
        "your_secret_key",
        "dev",
        "development",
        "secret",
        "secret-key",
        "secret_key",
        "secretkey",
        "supersecretkey",
        "super-secret-key",
        "changeme",
        "change-me",
        "change_me",
        "default",
        "password",
    }
)

DEFAULTS: dict[str, Any] = {
    "DATABASE": None,  # None: <instance>/securechat.sqlite3
    "RESPONDER": "echo",
    "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
    "OPENAI_MODEL": "llama3.2",
    "OPENAI_API_KEY": None,
    "OPENAI_PROXY": None,  # an explicit proxy; HTTP(S)_PROXY in the environment is ignored
    "OPENAI_CONNECT_TIMEOUT": 5,  # seconds to establish the connection
    "OPENAI_READ_TIMEOUT": 60,  # seconds of silence before the backend counts as stalled
    "OPENAI_MAX_ATTEMPTS": 3,  # tries when the connection cannot be made (never after sending)
    "OPENAI_RETRY_BACKOFF": 0.5,  # seconds before the 2nd try, doubled for each next one
    "OPENAI_MAX_REPLY_SECONDS": 300,  # a reply still streaming after this is cut
    "OPENAI_MAX_REPLY_CHARS": 32768,  # and one longer than this
    "SYSTEM_PROMPT": "You are a helpful assistant in a private chat. Answer concisely.",
    "HISTORY_MAX_CHARS": 24000,  # what the backend is shown, besides HISTORY_WINDOW messages
    "SESSION_IDLE_TIMEOUT": 1800,
    "SESSION_ABSOLUTE_TIMEOUT": 28800,
    "LOGIN_RATE_LIMIT": "5 per minute;100 per hour",  # failed attempts, per address and name
    "LOGIN_SUCCESS_RATE_LIMIT": "60 per hour",  # successful logins per account
    "REGISTER_RATE_LIMIT": "20 per hour",
    "CHAT_RATE_LIMIT": "30 per minute",
    "CREATE_RATE_LIMIT": "60 per minute;1000 per day",  # new conversations per user
    "MAX_STREAMS": 16,  # backend calls in progress at once (then 503 + Retry-After)
    "MAX_STREAMS_PER_USER": 3,  # one user's backend calls in progress (then 429)
    "MAX_SESSIONS_PER_USER": 20,  # live sessions; a login past it ends the least recent
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "memory://",
    "PROXY_FIX": 0,  # trusted reverse proxies in front (X-Forwarded-For)
    # Open connections per client address under `serve` (0: no cap; ignored behind a proxy).
    "MAX_CONNECTIONS_PER_ADDRESS": 32,
    "HTTPS": False,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "MAX_MESSAGE_CHARS": 32768,
    "HISTORY_WINDOW": 20,
    # scrypt N = 2**KDF_LOG_N; OWASP's minimum. Only tests may lower it.
    "KDF_LOG_N": 17,
    "KDF_R": 8,
    "KDF_P": 1,
    # Password KDF runs allowed at once (each scrypt run holds 128 MiB at the default);
    # KDF_QUEUE more wait up to KDF_MAX_WAIT seconds, the rest get 503 at once.
    "KDF_CONCURRENCY": 2,
    "KDF_QUEUE": 8,
    "KDF_MAX_WAIT": 2,
}

_POSITIVE_NUMBERS = ("SESSION_IDLE_TIMEOUT", "SESSION_ABSOLUTE_TIMEOUT", "MAX_CONTENT_LENGTH",
                     "MAX_MESSAGE_CHARS", "HISTORY_WINDOW", "KDF_LOG_N", "KDF_R", "KDF_P",
                     "HISTORY_MAX_CHARS", "OPENAI_CONNECT_TIMEOUT", "OPENAI_READ_TIMEOUT",
                     "OPENAI_MAX_ATTEMPTS", "OPENAI_RETRY_BACKOFF", "KDF_CONCURRENCY",
                     "OPENAI_MAX_REPLY_SECONDS", "OPENAI_MAX_REPLY_CHARS", "KDF_QUEUE",
                     "KDF_MAX_WAIT", "MAX_STREAMS", "MAX_STREAMS_PER_USER",
                     "MAX_SESSIONS_PER_USER")
_COUNTS = ("MAX_CONNECTIONS_PER_ADDRESS",)  # whole numbers where 0 means "no cap"
# Read as text even when they look like numbers (a numeric secret must stay a string).
_TEXT_KEYS = ("SECRET_KEY", "OPENAI_API_KEY", "OPENAI_MODEL", "DATABASE", "INSTANCE",
              "SYSTEM_PROMPT", "OPENAI_PROXY")


def read_environment(environ: Mapping[str, str] | None = None,
                     dotenv_path: str | os.PathLike[str] | None = ".env") -> dict[str, Any]:
    """Return ``SECURECHAT_*`` settings from a ``.env`` file and the environment (which wins)."""
    merged: dict[str, str | None] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update(dotenv_values(dotenv_path))
    merged.update(os.environ if environ is None else environ)
    settings: dict[str, Any] = {}
    for name, raw in merged.items():
        if not name.startswith(ENV_PREFIX) or raw is None:
            continue
        key = name[len(ENV_PREFIX):]
        settings[key] = raw if key in _TEXT_KEYS else _parse_scalar(raw)
    return settings


def _parse_scalar(raw: str) -> Any:
    # Like Flask's from_prefixed_env, but only numbers and booleans are converted.
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (bool, int, float)) else raw


def resolve_instance_path(instance_path: str | os.PathLike[str] | None,
                          env: Mapping[str, Any]) -> Path | None:
    """Pick the instance folder: explicit argument, then ``SECURECHAT_INSTANCE``."""
    chosen = instance_path if instance_path is not None else env.get("INSTANCE")
    return Path(chosen).expanduser().resolve() if chosen else None


def ensure_instance_folder(path: Path) -> None:
    """Create the instance folder private to its owner (0700) when it does not exist."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is masked by the umask


def check_trusted(path: Path, *, secret: bool = False) -> None:
    """Refuse a file or folder another user could have written (or, for secrets, read).

    Whoever can write the instance folder, ``secret_key`` or ``config.json`` can forge
    sessions or reconfigure the server; using them silently would hand that over.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    owner = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if info.st_uid != owner:
        raise ConfigError(f"{path} belongs to another user (uid {info.st_uid}); "
                          f"securechat only uses instance files of its own user")
    loose = 0o077 if secret else 0o022
    if info.st_mode & loose:
        wanted = "0700" if path.is_dir() else "0600"
        who = "readable or writable" if secret else "writable"
        raise ConfigError(f"{path} is {who} by other users (mode "
                          f"{info.st_mode & 0o777:04o}); run: chmod {wanted} {path}")


def check_instance_trust(instance: Path, database: str | None = None) -> None:
    """Check the instance folder and every file securechat reads from it."""
    check_trusted(instance)
    check_trusted(instance / SECRET_FILE, secret=True)
    check_trusted(instance / CONFIG_FILE)
    if database and database != ":memory:" and not database.startswith("file:"):
        for suffix in ("", "-wal", "-shm"):
            check_trusted(Path(database + suffix))


def build_config(instance: Path, env: Mapping[str, Any],
                 overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge the layers into one validated settings dict (secret key included)."""
    settings = dict(DEFAULTS)
    check_instance_trust(instance)
    config_file = instance / CONFIG_FILE
    if config_file.is_file():
        try:
            settings.update(json.loads(config_file.read_text("utf-8")))
        except ValueError as e:
            raise ConfigError(f"{config_file} is not valid JSON: {e}") from e
    settings.update(env)
    settings.update(overrides or {})
    settings.pop("INSTANCE", None)
    if not settings.get("DATABASE"):
        settings["DATABASE"] = str(instance / "securechat.sqlite3")
    check_instance_trust(instance, str(settings["DATABASE"]))
    if settings.get("SECRET_KEY") is None:
        settings["SECRET_KEY"] = load_or_create_secret(instance / SECRET_FILE)
    check_secret_key(settings["SECRET_KEY"])
    _check_numbers(settings)
    for key in _BOOLEAN_KEYS:
        settings[key] = _boolean(key, settings[key])
    settings["DEBUG"] = False  # the werkzeug debugger is remote code execution
    return settings


def load_or_create_secret(path: Path) -> str:
    """Read the secret from ``path``, or generate it there once with mode 0600.

    The file appears whole or not at all (written aside, then linked into place), so a
    second process starting at the same moment never reads it half-written.
    """
    if path.exists():
        return path.read_text("utf-8").strip()
    secret = secrets.token_urlsafe(48)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(scratch, path)
        except FileExistsError:
            return path.read_text("utf-8").strip()  # another process won the race
    finally:
        os.unlink(scratch)
    return secret


def check_secret_key(secret: object) -> None:
    """Refuse a missing, short, low-entropy or published server secret."""
    if not isinstance(secret, (str, bytes)) or not secret:
        raise ConfigError("SECRET_KEY is missing: set SECURECHAT_SECRET_KEY or let "
                          "securechat generate one in the instance folder")
    text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
    if text.strip().lower() in PUBLISHED_SECRETS:
        raise ConfigError("SECRET_KEY is a published example value; anyone could forge "
                          "cookies with it. Remove it to have one generated.")
    raw = secret if isinstance(secret, bytes) else secret.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(f"SECRET_KEY is {len(raw)} bytes; at least {MIN_SECRET_BYTES} "
                          "random bytes are required (e.g. python -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))')")
    if len(set(raw)) < 8:
        raise ConfigError("SECRET_KEY repeats too few characters to be random")


_BOOLEAN_KEYS = ("HTTPS", "RATELIMIT_ENABLED")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _boolean(key: str, value: Any) -> bool:
    # "no" or "off" in an environment variable must not switch a setting *on*.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{key} must be true or false (1/0, yes/no, on/off), not {value!r}")


def _check_numbers(settings: Mapping[str, Any]) -> None:
    for key in _POSITIVE_NUMBERS:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{key} must be a positive number, not {value!r}")
    for key in _COUNTS:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key} must be a whole number >= 0, not {value!r}")
