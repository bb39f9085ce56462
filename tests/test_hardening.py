"""KDF cost at or above OWASP's minimum (and upgraded at login), never debug, safe error bodies."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.cli import ScriptInfo

from securechat import (
    ConfigError,
    DecryptionError,
    create_app,
    create_app_from_env,
    crypto,
    records,
)
from securechat.settings import Settings

from .helpers import FAST, PASSWORD, AuthActions

# --- KDF cost ----------------------------------------------------------------------------


def test_default_kdf_cost_meets_owasp_minimum() -> None:
    # OWASP password storage: Argon2id m >= 19 MiB, t >= 2, p = 1 (or scrypt N >= 2^17, r = 8).
    defaults = Settings()
    assert defaults.KDF == "argon2id"
    assert defaults.KDF_ARGON2_MEMORY_KIB >= 19 * 1024 and defaults.KDF_ARGON2_ITERATIONS >= 2
    assert defaults.KDF_LOG_N >= 17 and defaults.KDF_R >= 8 and defaults.KDF_P >= 1
    assert defaults.kdf_params() == crypto.KdfParams.argon2id(19456, 2, 1)


def test_a_default_app_wraps_keys_at_the_owasp_cost(instance: Path) -> None:
    app = create_app({"RATELIMIT_ENABLED": False}, instance_path=instance)
    http = app.test_client()
    assert http.post("/api/register", json={"username": "olga",
                                            "password": PASSWORD}).status_code == 201
    assert _kdf_column(app, "olga") == "argon2id$m=19456,t=2,p=1"


def _kdf_column(app: Flask, username: str) -> str:
    return _user_row(app, username)[0]


def _user_row(app: Flask, username: str) -> tuple[str, bytes, bytes]:
    with closing(sqlite3.connect(app.config["DATABASE"])) as db, db:
        return db.execute("SELECT kdf, salt, wrapped_key FROM users WHERE username = ?",
                          (username,)).fetchone()


def _login(app: Flask, username: str = "alice") -> AuthActions:
    """``username`` logged in on a new test client of ``app``."""
    auth = AuthActions(app.test_client())
    auth.login(username)
    return auth


SCRYPT = {**FAST, "KDF": "scrypt"}


def test_lower_cost_wrap_is_upgraded_at_next_login(instance: Path) -> None:
    cheap = create_app({**SCRYPT, "KDF_LOG_N": 10}, instance_path=instance)
    assert AuthActions(cheap.test_client()).register("alice").status_code == 201
    alice = _login(cheap)
    conv = alice.new_conversation("before")
    assert alice.send(conv["id"], "kept").status_code == 201
    old = _user_row(cheap, "alice")
    assert old[0] == "scrypt$10$8$1"

    # The operator raises the cost; the same instance folder, so the same database.
    dearer = create_app({**SCRYPT, "KDF_LOG_N": 12}, instance_path=instance)
    alice = _login(dearer)
    new = _user_row(dearer, "alice")
    assert new[0] == "scrypt$12$8$1"
    assert new[1] != old[1] and new[2] != old[2]  # fresh salt, new wrap
    assert alice.history(conv["id"])[0] == "kept"
    # The new wrap opens with the password (the old one is gone).
    _login(dearer)
    stored = crypto.KdfParams.decode(new[0])
    kek = crypto.derive_kek(PASSWORD, new[1], stored)
    with closing(sqlite3.connect(dearer.config["DATABASE"])) as db, db:
        user_id = db.execute("SELECT id FROM users WHERE username = 'alice'").fetchone()[0]
    crypto.open_(kek, new[2], records.record_ad("user-key", user=user_id))
    with pytest.raises(DecryptionError):
        crypto.open_(kek, old[2], records.record_ad("user-key", user=user_id))


def test_cost_is_never_lowered_at_login(instance: Path) -> None:
    dear = create_app({**SCRYPT, "KDF_LOG_N": 12}, instance_path=instance)
    assert AuthActions(dear.test_client()).register("alice").status_code == 201
    before = _user_row(dear, "alice")
    cheap = create_app({**SCRYPT, "KDF_LOG_N": 10}, instance_path=instance)
    _login(cheap)
    assert _user_row(cheap, "alice") == before


def test_scrypt_wraps_move_to_argon2id_at_the_next_login(instance: Path) -> None:
    old = create_app({**SCRYPT, "KDF_LOG_N": 10}, instance_path=instance)
    assert AuthActions(old.test_client()).register("alice").status_code == 201
    assert _kdf_column(old, "alice") == "scrypt$10$8$1"
    now = create_app(FAST, instance_path=instance)  # Argon2id, the default
    alice = _login(now)
    assert _kdf_column(now, "alice") == "argon2id$m=64,t=1,p=1"
    assert alice.conversations() == []  # the same data key: nothing lost
    _login(now)  # and the new wrap opens with the same password


def test_failed_login_does_not_rewrap(instance: Path) -> None:
    cheap = create_app({**SCRYPT, "KDF_LOG_N": 10}, instance_path=instance)
    assert AuthActions(cheap.test_client()).register("alice").status_code == 201
    before = _user_row(cheap, "alice")
    dearer = create_app({**SCRYPT, "KDF_LOG_N": 12}, instance_path=instance)
    response = dearer.test_client().post("/api/login", json={"username": "alice",
                                                             "password": "wrong password"})
    assert response.status_code == 401
    assert _user_row(dearer, "alice") == before


# --- never debug -------------------------------------------------------------------------

HOSTILE_ENV = {"FLASK_DEBUG": "1", "SECURECHAT_DEBUG": "1", "SECURECHAT_PROPAGATE_EXCEPTIONS": "1",
               "SECURECHAT_TRAP_HTTP_EXCEPTIONS": "1"}


@pytest.fixture
def hostile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every environment switch that could turn debugging or tracebacks on."""
    for name, value in HOSTILE_ENV.items():
        monkeypatch.setenv(name, value)


def _boom() -> Any:
    raise RuntimeError("kaboom")


def test_debug_stays_off_whatever_the_environment(hostile_env: None, instance: Path) -> None:
    # Asked for in the environment, debug is refused outright (not quietly ignored) ...
    with pytest.raises(ConfigError, match="debug"):
        create_app_from_env(FAST, instance_path=instance)
    with pytest.raises(ConfigError, match="debug"):
        create_app({**FAST, "DEBUG": True}, instance_path=instance)
    # ... and the other switches are not settings: they change nothing.
    without_debug = {k: v for k, v in HOSTILE_ENV.items() if k != "SECURECHAT_DEBUG"}
    app = create_app_from_env(FAST, instance_path=instance, environ=without_debug)
    assert app.debug is False and app.config["DEBUG"] is False
    assert not app.config.get("PROPAGATE_EXCEPTIONS")
    assert not app.config.get("TRAP_HTTP_EXCEPTIONS")


def test_debug_cannot_be_switched_on(instance: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_simple(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a server would start, debugger={kwargs.get('use_debugger')}")

    monkeypatch.setattr("werkzeug.serving.run_simple", run_simple)
    app = create_app(FAST, instance_path=instance)
    app.debug = False  # harmless
    with pytest.raises(ConfigError):
        app.debug = True
    with pytest.raises(ConfigError):
        app.run(debug=True)  # refused before anything binds a port


def test_flask_run_debug_is_refused(hostile_env: None, instance: Path) -> None:
    # `flask --app ... run --debug` (or FLASK_DEBUG=1) sets app.debug when loading the app.
    info = ScriptInfo(create_app=lambda: create_app(FAST, instance_path=instance))
    with pytest.raises(ConfigError):
        info.load_app()


def test_errors_stay_safe_in_a_hostile_environment(hostile_env: None, instance: Path) -> None:
    app = create_app(FAST, instance_path=instance)
    secret = app.config["SECRET_KEY"]

    def leak() -> Any:
        raise RuntimeError(f"{secret} {app.config['DATABASE']} {instance}")

    app.add_url_rule("/api/leak", "api_leak", leak)
    app.add_url_rule("/leak", "page_leak", leak)
    app.add_url_rule("/api/undecryptable", "undecryptable", _undecryptable)
    http = app.test_client()
    for path, code in [("/api/leak", "internal_error"), ("/api/undecryptable", "integrity_error")]:
        response = http.get(path)
        assert response.status_code == 500
        assert response.get_json()["error"]["code"] == code
        _assert_no_details(response.get_data(as_text=True), secret, instance)
    page = http.get("/leak")
    assert page.status_code == 500
    _assert_no_details(page.get_data(as_text=True), secret, instance)


def _undecryptable() -> Any:
    raise DecryptionError()


def _assert_no_details(body: str, secret: str, instance: Path) -> None:
    for leak in (secret, str(instance), "Traceback", 'File "', "RuntimeError", "kaboom",
                 "werkzeug", "site-packages", ".py"):
        assert leak not in body, leak
