"""The application factory: settings checked once, storage, blueprints, errors and headers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from flask import Flask, Response, current_app, jsonify, request

from .. import instance as folder
from .. import settings as settings_module
from .. import store
from ..backends import make_responder
from ..errors import ConfigError
from . import (
    account,
    auth,
    capacity,
    chat,
    devices,
    export,
    ghost,
    http,
    importer,
    limits,
    maintenance,
    page,
    search,
)

log = logging.getLogger("securechat.settings")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class _NeverDebug(Flask):
    """A Flask app whose debug mode cannot be switched on.

    ``flask run --debug``, ``FLASK_DEBUG=1 flask run`` and ``app.run(debug=True)`` set
    ``app.debug`` before starting werkzeug's debugger, which is remote code execution:
    refusing here stops them before anything listens.
    """

    @property
    def debug(self) -> bool:
        """Always False."""
        return False

    @debug.setter
    def debug(self, value: bool) -> None:
        if value:
            raise ConfigError(settings_module.NEVER_DEBUG)


def create_app(config: Mapping[str, Any] | None = None,
               instance_path: str | os.PathLike[str] | None = None) -> Flask:
    """Build a securechat app: defaults → ``<instance>/config.json`` → ``config``.

    The environment is not read (a notebook shows the same thing on every machine); a
    deployment uses :func:`create_app_from_env`. ``instance_path`` defaults to
    ``./instance``. Raises :class:`securechat.ConfigError` for an unsafe or invalid setting.
    """
    return _build(folder.resolve(instance_path), config, None)


def create_app_from_env(config: Mapping[str, Any] | None = None,
                        instance_path: str | os.PathLike[str] | None = None, *,
                        environ: Mapping[str, str] | None = None,
                        dotenv_path: str | os.PathLike[str] | None = ".env") -> Flask:
    """Like :func:`create_app`, with the ``SECURECHAT_*`` environment and ``.env`` too.

    What ``python -m securechat serve`` and any WSGI server use. Layers: defaults →
    config.json → ``.env`` → the environment (``environ``, default ``os.environ``) →
    ``config``. The instance folder: ``instance_path``, else ``SECURECHAT_INSTANCE``.
    """
    env: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        # Settings from a file others could write are no one's settings: refuse, not read.
        folder.check_trusted(Path(dotenv_path).resolve())
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    chosen = instance_path if instance_path is not None else env.get("SECURECHAT_INSTANCE")
    return _build(folder.resolve(chosen), config, env)


def _build(instance: Path, config: Mapping[str, Any] | None,
           environ: Mapping[str, str] | None) -> Flask:
    folder.ensure_folder(instance)
    folder.check_files(instance)
    chosen = settings_module.load(instance, config, environ)
    database = chosen.DATABASE or str(instance / folder.DATABASE_FILE)
    secret = chosen.SECRET_KEY or folder.load_or_create_secret(instance / folder.SECRET_FILE)
    folder.check_secret_key(secret)
    folder.check_files(instance, database)
    # No app-wide /static route: the page blueprint serves its files under /assets.
    app = _NeverDebug("securechat", instance_path=str(instance), static_folder=None)
    app.config.update(chosen.as_config(), SECRET_KEY=secret, DATABASE=database)
    app.extensions["securechat.settings"] = chosen
    app.json = http.SafeJSONProvider(app)
    app.request_class = http.InMemoryRequest
    # Before any route exists: every <id> in a URL is a segment without NUL.
    app.url_map.converters["default"] = app.url_map.converters["string"] = http.SegmentConverter
    app.extensions["securechat.responder"] = make_responder(app.config)
    capacity.init_app(app)
    store.init_app(app)
    maintenance.init_app(app)
    http.register_error_handlers(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(devices.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(ghost.bp)
    app.register_blueprint(export.bp)
    app.register_blueprint(importer.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(page.bp)
    app.add_url_rule("/api/health", "health", _health)
    limits.init_app(app)  # after every route: it wraps the limited views
    app.after_request(_security_headers)
    for weakness in chosen.weaknesses():  # said once the start has succeeded
        log.warning("%s", weakness)
    return app


def _health() -> Response:
    """Liveness probe."""
    return jsonify(status="ok")


def _security_headers(response: Response) -> Response:
    """Set the headers every response carries, errors included."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api") or request.cookies:
        headers["Cache-Control"] = "no-store"
    if current_app.config["HTTPS"]:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response
