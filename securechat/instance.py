"""The instance folder: where the server secret and the database live, and who may touch them.

The server secret is never a literal: it comes from the settings (``SECURECHAT_SECRET_KEY``)
or is generated once into ``<instance>/secret_key`` (mode 0600, folder 0700). Short,
repetitive or published secrets are refused. Files another user could have written (or,
for the secret, read) are refused too: whoever can write them can forge sessions or
reconfigure the server.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from .errors import ConfigError

MIN_SECRET_BYTES = 32
SECRET_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = "config.json"
DATABASE_FILE = "securechat.sqlite3"

# Values copied from tutorials and framework docs; anyone can forge cookies with them.
PUBLISHED_SECRETS = frozenset({
    "your-secret-key-here", "your-secret-key", "your_secret_key", "dev", "development",
    "secret", "secret-key", "secret_key", "secretkey", "supersecretkey", "super-secret-key",
    "changeme", "change-me", "change_me", "default", "password",
})


def resolve(instance_path: str | os.PathLike[str] | None) -> Path:
    """The instance folder: the one given, else ``./instance`` in the working directory."""
    return Path(instance_path if instance_path is not None else "instance").expanduser().resolve()


def ensure_folder(path: Path) -> None:
    """Create the instance folder private to its owner (0700) when it does not exist."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is masked by the umask


def check_trusted(path: Path, *, secret: bool = False) -> None:
    """Refuse a file or folder another user could have written (or, for secrets, read)."""
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


def check_files(instance: Path, database: str | None = None) -> None:
    """Check the instance folder and every file securechat reads from it."""
    check_trusted(instance)
    check_trusted(instance / SECRET_FILE, secret=True)
    check_trusted(instance / CONFIG_FILE)
    if database and database != ":memory:" and not database.startswith("file:"):
        for suffix in ("", "-wal", "-shm"):
            check_trusted(Path(database + suffix))


def load_or_create_secret(path: Path) -> str:
    """Read the secret from ``path``, or generate it there once with mode 0600.

    The file appears whole or not at all (written aside, then linked into place), so a
    second process starting at the same moment never reads it half-written.
    """
    if path.exists():
        return _read_secret(path)
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
            return _read_secret(path)  # another process won the race
    finally:
        os.unlink(scratch)
    return secret


def _read_secret(path: Path) -> str:
    try:
        return path.read_text("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not text; delete it to have a new secret generated "
                          "(every session ends)") from None


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
