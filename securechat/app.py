"""The application factory: configuration, storage, blueprints, errors and headers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from . import api, auth, capacity, chat, limits, store, web
from . import config as settings
from .errors import ConfigError
from .responders import make_responder

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
            raise ConfigError("securechat never runs in debug mode: werkzeug's debugger "
                              "lets anyone who reaches it run code on the server")


def create_app(config: Mapping[str, Any] | None = None,
               instance_path: str | os.PathLike[str] | None = None, *,
               environ: Mapping[str, str] | None = None,
               dotenv_path: str | os.PathLike[str] | None = ".env") -> Flask:
    """Build a securechat app: defaults → instance folder → environment/.env → ``config``.

    ``environ`` replaces ``os.environ`` and ``dotenv_path=None`` skips the ``.env`` file:
    a tutorial passes ``environ={}, dotenv_path=None`` so the reader's own settings
    cannot change what it shows. Raises :class:`securechat.ConfigError` when unsafe.
    """
    overrides = dict(config or {})
    env = settings.read_environment(environ, dotenv_path)
    if instance_path is None:
        instance_path = overrides.get("INSTANCE")
    chosen = settings.resolve_instance_path(instance_path, env)
    # No app-wide /static route: the web blueprint serves its files under /assets.
    app = _NeverDebug("securechat", instance_path=str(chosen) if chosen else None,
                      static_folder=None)
    instance = Path(app.instance_path)
    settings.ensure_instance_folder(instance)
    app.config.update(settings.build_config(instance, env, overrides))
    app.debug = False
    app.json = api.SafeJSONProvider(app)
    app.request_class = api.InMemoryRequest
    app.extensions["securechat.responder"] = make_responder(app.config)
    capacity.init_app(app)
    store.init_app(app)
    api.register_error_handlers(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(web.bp)
    app.add_url_rule("/api/health", "health", _health)
    limits.init_app(app)  # after every route: it wraps the limited views
    app.after_request(_security_headers)
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
