"""Configuration layers, the secret key on disk, and refusing unsafe secrets."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from securechat import ConfigError, create_app
from securechat.config import DEFAULTS, PUBLISHED_SECRETS, read_environment

from .conftest import FAST

GOOD_SECRET = "k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789"


def test_secret_generated_once_with_private_modes(instance: Path) -> None:
    app = create_app(FAST, instance_path=instance)
    secret_file = instance / "secret_key"
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() == app.config["SECRET_KEY"]
    assert len(app.config["SECRET_KEY"].encode()) >= 32
    # A second start reads the same key instead of making a new one.
    assert create_app(FAST, instance_path=instance).config["SECRET_KEY"] == app.config["SECRET_KEY"]


def test_each_instance_gets_its_own_secret(tmp_path: Path) -> None:
    a = create_app(FAST, instance_path=tmp_path / "a").config["SECRET_KEY"]
    b = create_app(FAST, instance_path=tmp_path / "b").config["SECRET_KEY"]
    assert a != b


def test_secret_from_environment_is_used_and_not_written(
    instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURECHAT_SECRET_KEY", GOOD_SECRET)
    app = create_app(FAST, instance_path=instance)
    assert app.config["SECRET_KEY"] == GOOD_SECRET
    assert not (instance / "secret_key").exists()


@pytest.mark.parametrize("secret", sorted(PUBLISHED_SECRETS) + ["YOUR-SECRET-KEY-HERE", " dev "])
def test_published_secret_refused(instance: Path, secret: str) -> None:
    with pytest.raises(ConfigError, match="published"):
        create_app({**FAST, "SECRET_KEY": secret}, instance_path=instance)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "a" * 64, "ab" * 40])
def test_weak_secret_refused(instance: Path, secret: str) -> None:
    with pytest.raises(ConfigError):
        create_app({**FAST, "SECRET_KEY": secret}, instance_path=instance)


def test_published_secret_from_environment_refused(
    instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURECHAT_SECRET_KEY", "your-secret-key-here")
    with pytest.raises(ConfigError):
        create_app(FAST, instance_path=instance)


def test_layers_defaults_instance_env_overrides(
    instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.mkdir(mode=0o700)
    (instance / "config.json").write_text(
        json.dumps(
            {"SESSION_IDLE_TIMEOUT": 111, "SESSION_ABSOLUTE_TIMEOUT": 222, "HISTORY_WINDOW": 7}
        )
    )
    monkeypatch.setenv("SECURECHAT_SESSION_ABSOLUTE_TIMEOUT", "333")
    monkeypatch.setenv("SECURECHAT_HISTORY_WINDOW", "8")
    app = create_app({**FAST, "HISTORY_WINDOW": 9}, instance_path=instance)
    assert app.config["SESSION_IDLE_TIMEOUT"] == 111  # instance folder over default
    assert app.config["SESSION_ABSOLUTE_TIMEOUT"] == 333  # environment over instance
    assert app.config["HISTORY_WINDOW"] == 9  # explicit override over environment
    assert app.config["CHAT_RATE_LIMIT"] == DEFAULTS["CHAT_RATE_LIMIT"]


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "SECURECHAT_SESSION_IDLE_TIMEOUT=60\nSECURECHAT_OPENAI_MODEL=from-dotenv\n"
        "SECURECHAT_HTTPS=true\nOTHER=ignored\n"
    )
    settings = read_environment({"SECURECHAT_OPENAI_MODEL": "from-env"}, dotenv_path=dotenv)
    assert settings == {"SESSION_IDLE_TIMEOUT": 60, "OPENAI_MODEL": "from-env", "HTTPS": True}


def test_dotenv_in_working_directory_is_used(instance: Path) -> None:
    Path(".env").write_text("SECURECHAT_SESSION_IDLE_TIMEOUT=42\n")
    assert create_app(FAST, instance_path=instance).config["SESSION_IDLE_TIMEOUT"] == 42


def test_numeric_looking_secret_stays_text() -> None:
    settings = read_environment({"SECURECHAT_SECRET_KEY": "1" * 40}, dotenv_path=None)
    assert settings["SECRET_KEY"] == "1" * 40


def test_instance_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURECHAT_INSTANCE", str(tmp_path / "from-env"))
    app = create_app(FAST)
    assert Path(app.instance_path) == tmp_path / "from-env"
    assert Path(app.config["DATABASE"]).parent == tmp_path / "from-env"


@pytest.mark.parametrize(
    "key,value",
    [
        ("SESSION_IDLE_TIMEOUT", 0),
        ("KDF_LOG_N", -1),
        ("MAX_CONTENT_LENGTH", "big"),
        ("HISTORY_WINDOW", True),
    ],
)
def test_bad_numbers_refused(instance: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        create_app({**FAST, key: value}, instance_path=instance)


def test_invalid_instance_config_file_refused(instance: Path) -> None:
    instance.mkdir(mode=0o700)
    (instance / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        create_app(FAST, instance_path=instance)


def test_unknown_responder_refused(instance: Path) -> None:
    with pytest.raises(ConfigError, match="RESPONDER"):
        create_app({**FAST, "RESPONDER": "nope"}, instance_path=instance)


def test_defaults_are_safe() -> None:
    assert DEFAULTS["KDF_LOG_N"] >= 17 and DEFAULTS["KDF_R"] >= 8 and DEFAULTS["KDF_P"] >= 1
    assert DEFAULTS["SESSION_IDLE_TIMEOUT"] == 1800
    assert DEFAULTS["SESSION_ABSOLUTE_TIMEOUT"] == 28800
    assert DEFAULTS["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert DEFAULTS["RESPONDER"] == "echo"
    assert "SECRET_KEY" not in DEFAULTS


def test_debug_is_never_on(instance: Path) -> None:
    app = create_app({**FAST, "DEBUG": True}, instance_path=instance)
    assert app.debug is False and app.config["DEBUG"] is False


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("no", False),
        ("off", False),
        ("0", False),
        ("false", False),
        ("yes", True),
        ("ON", True),
        ("1", True),
        ("true", True),
    ],
)
def test_boolean_settings_parse_strictly(
    instance: Path, monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("SECURECHAT_HTTPS", raw)
    assert create_app(FAST, instance_path=instance).config["HTTPS"] is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_unclear_boolean_refused(instance: Path, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SECURECHAT_HTTPS", raw)
    with pytest.raises(ConfigError, match="HTTPS"):
        create_app(FAST, instance_path=instance)


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from securechat.config import load_or_create_secret

    folder = tmp_path / "fresh"
    folder.mkdir()
    path = folder / "secret_key"
    with ThreadPoolExecutor(8) as pool:
        secrets_seen = set(pool.map(lambda _: load_or_create_secret(path), range(32)))
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) >= 32
    assert [p.name for p in folder.iterdir()] == ["secret_key"]  # no scratch file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_app_can_ignore_the_callers_environment(
    instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notebooks pass environ={} and dotenv_path=None: the reader's settings change nothing."""
    monkeypatch.setenv("SECURECHAT_RESPONDER", "openai")
    monkeypatch.setenv("SECURECHAT_SECRET_KEY", GOOD_SECRET)
    Path(".env").write_text("SECURECHAT_SESSION_IDLE_TIMEOUT=42\n")
    app = create_app(FAST, instance_path=instance, environ={}, dotenv_path=None)
    assert app.config["RESPONDER"] == "echo"
    assert app.config["SESSION_IDLE_TIMEOUT"] == 1800
    assert app.config["SECRET_KEY"] != GOOD_SECRET and (instance / "secret_key").exists()
    explicit = create_app(
        FAST, instance_path=instance, environ={"SECURECHAT_HISTORY_WINDOW": "3"}, dotenv_path=None
    )
    assert explicit.config["HISTORY_WINDOW"] == 3
