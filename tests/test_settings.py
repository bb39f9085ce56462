"""Settings: one typed object from its layers, validated once at start; the secret on disk."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from securechat import ConfigError, create_app, create_app_from_env
from securechat.instance import PUBLISHED_SECRETS, load_or_create_secret
from securechat.settings import Settings, load

from .helpers import FAST
from .served import refused, serve_command, serve_env

GOOD_SECRET = "k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789"
DEFAULTS = Settings()


# --- the secret key -----------------------------------------------------------------------


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


def test_secret_from_environment_is_used_and_not_written(instance: Path) -> None:
    app = create_app_from_env(FAST, instance_path=instance,
                              environ={"SECURECHAT_SECRET_KEY": GOOD_SECRET})
    assert app.config["SECRET_KEY"] == GOOD_SECRET
    assert not (instance / "secret_key").exists()


@pytest.mark.parametrize("secret", sorted(PUBLISHED_SECRETS) + ["YOUR-SECRET-KEY-HERE", " dev "])
def test_published_secret_refused(instance: Path, secret: str) -> None:
    with pytest.raises(ConfigError, match="published"):
        create_app({**FAST, "SECRET_KEY": secret}, instance_path=instance)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "a" * 64, "ab" * 40])
def test_weak_secret_refused(instance: Path, secret: str) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({**FAST, "SECRET_KEY": secret or "  "}, instance_path=instance)


def test_published_secret_from_environment_refused(instance: Path) -> None:
    with pytest.raises(ConfigError, match="published"):
        create_app_from_env(FAST, instance_path=instance,
                            environ={"SECURECHAT_SECRET_KEY": "your-secret-key-here"})


def test_numeric_looking_secret_stays_text(instance: Path) -> None:
    secret = "1234567890" * 4 + "abcdefgh"
    app = create_app_from_env(FAST, instance_path=instance,
                              environ={"SECURECHAT_SECRET_KEY": secret})
    assert app.config["SECRET_KEY"] == secret


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "fresh"
    folder.mkdir()
    path = folder / "secret_key"
    with ThreadPoolExecutor(8) as pool:
        secrets_seen = set(pool.map(lambda _: load_or_create_secret(path), range(32)))
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) >= 32
    assert [p.name for p in folder.iterdir()] == ["secret_key"]  # no scratch file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- layers -------------------------------------------------------------------------------


def _config_file(instance: Path, values: dict[str, Any]) -> None:
    instance.mkdir(mode=0o700, exist_ok=True)
    (instance / "config.json").write_text(json.dumps(values))
    (instance / "config.json").chmod(0o600)


def test_layers_defaults_file_environment_overrides(instance: Path) -> None:
    _config_file(instance, {"SESSION_IDLE_TIMEOUT": 111, "SESSION_ABSOLUTE_TIMEOUT": 222,
                            "HISTORY_WINDOW": 7})
    env = {"SECURECHAT_SESSION_ABSOLUTE_TIMEOUT": "333", "SECURECHAT_HISTORY_WINDOW": "8"}
    app = create_app_from_env({**FAST, "HISTORY_WINDOW": 9}, instance_path=instance,
                              environ=env)
    assert app.config["SESSION_IDLE_TIMEOUT"] == 111  # the instance's file over a default
    assert app.config["SESSION_ABSOLUTE_TIMEOUT"] == 333  # the environment over the file
    assert app.config["HISTORY_WINDOW"] == 9  # an explicit override over the environment
    assert app.config["CHAT_RATE_LIMIT"] == DEFAULTS.CHAT_RATE_LIMIT
    assert app.extensions["securechat.settings"].HISTORY_WINDOW == 9


def test_create_app_reads_no_environment_and_no_dotenv(
        instance: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a notebook calls: the reader's exported settings and .env change nothing.
    monkeypatch.setenv("SECURECHAT_RESPONDER", "openai")
    monkeypatch.setenv("SECURECHAT_SECRET_KEY", GOOD_SECRET)
    Path(".env").write_text("SECURECHAT_SESSION_IDLE_TIMEOUT=42\n")
    app = create_app(FAST, instance_path=instance)
    assert app.config["RESPONDER"] == "echo"
    assert app.config["SESSION_IDLE_TIMEOUT"] == DEFAULTS.SESSION_IDLE_TIMEOUT
    assert app.config["SECRET_KEY"] != GOOD_SECRET and (instance / "secret_key").exists()


def test_create_app_from_env_reads_dotenv_and_the_environment_wins(
        instance: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("SECURECHAT_SESSION_IDLE_TIMEOUT=60\nSECURECHAT_OPENAI_MODEL=dotenv\n"
                            "SECURECHAT_HTTPS=true\nOTHER=ignored\n")
    monkeypatch.setenv("SECURECHAT_OPENAI_MODEL", "from-env")
    app = create_app_from_env(FAST, instance_path=instance)
    assert (app.config["SESSION_IDLE_TIMEOUT"], app.config["OPENAI_MODEL"],
            app.config["HTTPS"]) == (60, "from-env", True)
    ignored = create_app_from_env(FAST, instance_path=instance, dotenv_path=None)
    assert ignored.config["SESSION_IDLE_TIMEOUT"] == DEFAULTS.SESSION_IDLE_TIMEOUT


def test_instance_from_environment(tmp_path: Path) -> None:
    app = create_app_from_env(FAST, environ={"SECURECHAT_INSTANCE": str(tmp_path / "env")})
    assert Path(app.instance_path) == tmp_path / "env"
    assert Path(app.config["DATABASE"]).parent == tmp_path / "env"


def test_default_instance_is_instance_in_the_working_folder() -> None:
    app = create_app(FAST)
    assert Path(app.instance_path) == Path.cwd() / "instance"


# --- validated once, at start -------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "says"), [
    ("SESSION_IDLE_TIMEOUT", 0, "between"),
    ("KDF_LOG_N", 30, "between 10 and 22"),
    ("KDF_LOG_N", 9, "between"),
    ("MAX_CONTENT_LENGTH", "big", "whole number"),
    ("HISTORY_WINDOW", True, "whole number"),
    ("OPENAI_READ_TIMEOUT", "5", "number"),
    ("HTTPS", 1, "true or false"),
    ("LOGIN_RATE_LIMIT", "lots", "rate limit"),
    ("CHAT_RATE_LIMIT", "", "rate limit"),
    ("OPENAI_BASE_URL", "ftp://x", "http(s) URL"),
    ("OPENAI_PROXY", "socks5://x", "http(s) URL"),
    ("RESPONDER", "nope", "one of echo, openai"),
    ("PROXY_FIX", -1, "between"),
    ("MAX_CONNECTIONS_PER_ADDRESS", 1.5, "whole number"),
])
def test_bad_values_refused_naming_the_setting(instance: Path, key: str, value: object,
                                               says: str) -> None:
    with pytest.raises(ConfigError, match=key) as refused_start:
        create_app({**FAST, key: value}, instance_path=instance)
    assert says in str(refused_start.value)


@pytest.mark.parametrize(("env", "says"), [
    ({"SECURECHAT_KDF_LOG_N": "30"}, "KDF_LOG_N (from SECURECHAT_KDF_LOG_N) must be between"),
    ({"SECURECHAT_HTTPS": "maybe"}, "HTTPS must be true or false"),
    ({"SECURECHAT_HISTORY_WINDOW": "ten"}, "HISTORY_WINDOW must be a number"),
    ({"SECURECHAT_DEBUG": "1"}, "never runs in debug mode"),
])
def test_bad_environment_refused(instance: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as refused_start:
        create_app_from_env(FAST, instance_path=instance, environ=env)
    assert says in str(refused_start.value)


@pytest.mark.parametrize(("raw", "expected"), [
    ("no", False), ("off", False), ("0", False), ("false", False),
    ("yes", True), ("ON", True), ("1", True), ("true", True),
])
def test_boolean_environment_parses_strictly(instance: Path, raw: str, expected: bool) -> None:
    app = create_app_from_env(FAST, instance_path=instance, environ={"SECURECHAT_HTTPS": raw})
    assert app.config["HTTPS"] is expected


def test_invalid_config_file_refused(instance: Path) -> None:
    instance.mkdir(mode=0o700)
    (instance / "config.json").write_text("{not json")
    (instance / "config.json").chmod(0o600)
    with pytest.raises(ConfigError, match="config.json"):
        create_app(FAST, instance_path=instance)


def test_wrong_type_in_config_file_refused(instance: Path) -> None:
    _config_file(instance, {"HISTORY_WINDOW": "7"})
    with pytest.raises(ConfigError, match="HISTORY_WINDOW in config.json"):
        create_app(FAST, instance_path=instance)


def test_unknown_override_is_an_error_with_a_suggestion(instance: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean KDF_LOG_N"):
        create_app({**FAST, "KDF_LOGN": 12}, instance_path=instance)


def test_unknown_environment_names_warn_and_start_continues(
        instance: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"SECURECHAT_SESION_IDLE_TIMEOUT": "5", "SECURECHAT_TEST_ANYTHING": "x",
           "SECURECHAT_PROPAGATE_EXCEPTIONS": "1", "NOT_OURS": "1"}
    with caplog.at_level(logging.WARNING, "securechat.settings"):
        app = create_app_from_env(FAST, instance_path=instance, environ=env)
    warned = [r.getMessage() for r in caplog.records if r.name == "securechat.settings"]
    assert any("SECURECHAT_SESION_IDLE_TIMEOUT (did you mean SECURECHAT_SESSION_IDLE_TIMEOUT?)"
               in w for w in warned)
    assert any("SECURECHAT_PROPAGATE_EXCEPTIONS" in w for w in warned)
    assert not any("TEST_ANYTHING" in w or "NOT_OURS" in w for w in warned)
    assert app.config["SESSION_IDLE_TIMEOUT"] == DEFAULTS.SESSION_IDLE_TIMEOUT
    assert not app.config.get("PROPAGATE_EXCEPTIONS")


def test_low_kdf_cost_is_allowed_with_a_warning(instance: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "securechat.settings"):
        create_app({**FAST, "KDF_LOG_N": 12}, instance_path=instance)
    assert any("below OWASP's minimum" in r.getMessage() for r in caplog.records)


def test_debug_is_refused_not_ignored(instance: Path) -> None:
    with pytest.raises(ConfigError, match="debug"):
        create_app({**FAST, "DEBUG": True}, instance_path=instance)
    app = create_app({**FAST, "DEBUG": False}, instance_path=instance)
    assert app.debug is False and app.config["DEBUG"] is False


def test_defaults_are_safe() -> None:
    assert DEFAULTS.KDF_LOG_N >= 17 and DEFAULTS.KDF_R >= 8 and DEFAULTS.KDF_P >= 1
    assert (DEFAULTS.SESSION_IDLE_TIMEOUT, DEFAULTS.SESSION_ABSOLUTE_TIMEOUT) == (1800, 28800)
    assert DEFAULTS.MAX_CONTENT_LENGTH == 1024 * 1024
    assert DEFAULTS.RESPONDER == "echo" and DEFAULTS.SECRET_KEY is None
    assert DEFAULTS.RATELIMIT_ENABLED is True and DEFAULTS.HTTPS is False


def test_load_validates_without_an_app(tmp_path: Path) -> None:
    settings = load(tmp_path, {"HISTORY_WINDOW": 3},
                    {"SECURECHAT_KDF_LOG_N": "12", "SECURECHAT_KDF": "Scrypt"})
    assert (settings.HISTORY_WINDOW, settings.KDF_LOG_N) == (3, 12)
    assert settings.kdf_params().encode() == "scrypt$12$8$1"


# --- serve refuses a bad setting in one line, exit 2 --------------------------------------


@pytest.mark.parametrize(("env", "says"), [
    ({"SECURECHAT_KDF_LOG_N": "30"}, "KDF_LOG_N"),
    ({"SECURECHAT_LOGIN_RATE_LIMIT": "often"}, "LOGIN_RATE_LIMIT"),
    ({"SECURECHAT_OPENAI_BASE_URL": "localhost:11434"}, "OPENAI_BASE_URL"),
])
def test_serve_refuses_a_bad_setting_in_one_line(instance: Path, env: dict[str, str],
                                                 says: str) -> None:
    proc = refused(instance, serve_env(**env))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("securechat: refusing to start:")
    assert says in lines[0] and "Traceback" not in proc.stderr


def test_serve_reads_dotenv_from_its_working_folder(instance: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("SECURECHAT_HISTORY_WINDOW=0\n")
    proc = subprocess.run(serve_command(instance), capture_output=True, text=True, cwd=work,
                          env=serve_env(), timeout=120)
    assert proc.returncode == 2 and "HISTORY_WINDOW" in proc.stderr
