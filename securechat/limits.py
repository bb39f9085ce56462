"""Rate limits (Flask-Limiter) and trusted-proxy handling, wired into an app by its factory.

Login is limited per client address and per username, counting attempts that did not
succeed; registration per address; sending messages per user. Counters live in
``RATELIMIT_STORAGE_URI`` (``memory://`` for one process, ``redis://…`` for several).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from limits import parse_many
from limits.errors import ConfigurationError
from werkzeug.middleware.proxy_fix import ProxyFix

from . import auth
from .api import fail
from .errors import ConfigError

LIMIT_KEYS = ("LOGIN_RATE_LIMIT", "REGISTER_RATE_LIMIT", "CHAT_RATE_LIMIT")
# Views that ask the AI backend share one budget per user (retrying is not a way around it).
BACKEND_ENDPOINTS = ("chat.send", "chat.reply_again")


def client_address() -> str:
    """Rate-limit key of the client's address (the proxy's view of it under ``PROXY_FIX``)."""
    return "addr:" + (request.remote_addr or "unknown")


def login_username() -> str:
    """Rate-limit key of the username a login names, case-folded like the accounts are."""
    data = request.get_json(silent=True) if request.mimetype == "application/json" else None
    name = data.get("username") if isinstance(data, dict) else None
    if isinstance(name, str) and auth.USERNAME_RE.fullmatch(name):
        return "user:" + name.lower()
    # One shared bucket for names no account can have: keys stay small and bounded.
    return "user:<invalid>"


def session_user() -> str:
    """Rate-limit key of the logged-in user; the address when there is no valid session."""
    if auth.load_session():
        return "uid:" + g.user_id
    return client_address()


def _unsuccessful(response: Response) -> bool:
    # Only failed logins count: a user who logs in often is not guessing passwords.
    return not 200 <= response.status_code < 300


def _one_login_at_a_time(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse (429) a login while another for the same username is still being answered.

    Failed logins are counted only once answered, so without this, parallel guesses
    would all pass the check before any was counted. The slot is released at teardown,
    after the limiter has counted the attempt. (Per process: with several workers, the
    overshoot is at most one guess per worker.)
    """
    busy: set[str] = set()
    lock = threading.Lock()

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        key = login_username()
        with lock:
            if key in busy:
                fail(429, "rate_limited", "Another login for this account is in progress.")
            busy.add(key)
        g.login_slot = (busy, lock, key)
        return view(*args, **kwargs)

    return wrapped


def _release_login_slot(exc: BaseException | None = None) -> None:
    slot = g.pop("login_slot", None)
    if slot is not None:
        busy, lock, key = slot
        with lock:
            busy.discard(key)


def _check_config(app: Flask) -> None:
    cfg = app.config
    proxies = cfg.get("PROXY_FIX", 0)
    if isinstance(proxies, bool) or not isinstance(proxies, int) or proxies < 0:
        raise ConfigError(f"PROXY_FIX must be the number of trusted proxies (>= 0), "
                          f"not {proxies!r}")
    for key in LIMIT_KEYS:
        try:
            if not parse_many(str(cfg[key])):
                raise ValueError("no limit")
        except ValueError as e:
            raise ConfigError(f"{key} is not a rate limit such as '5 per minute': "
                              f"{cfg[key]!r}") from e


def init_app(app: Flask) -> Limiter:
    """Trust ``PROXY_FIX`` proxies for the client address and apply the configured limits.

    Call after every blueprint is registered: the limited views are wrapped by endpoint.
    """
    _check_config(app)
    cfg = app.config
    if cfg.get("PROXY_FIX", 0):
        # Only X-Forwarded-For is trusted: HTTPS is decided by the HTTPS setting, not a header.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg["PROXY_FIX"],
                                x_proto=0, x_host=0, x_port=0, x_prefix=0)
    try:
        limiter = Limiter(client_address, app=app, storage_uri=cfg["RATELIMIT_STORAGE_URI"],
                          headers_enabled=True, enabled=bool(cfg["RATELIMIT_ENABLED"]))
    except ConfigurationError as e:
        raise ConfigError(f"RATELIMIT_STORAGE_URI cannot be used: {e}") from e
    app.extensions["securechat.limiter"] = limiter
    login = cfg["LOGIN_RATE_LIMIT"]
    chat = limiter.shared_limit(cfg["CHAT_RATE_LIMIT"], scope="backend", key_func=session_user)
    rules: dict[str, list[Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
        "auth.login": [
            limiter.limit(login, key_func=client_address, deduct_when=_unsuccessful),
            limiter.limit(login, key_func=login_username, deduct_when=_unsuccessful)],
        "auth.register": [limiter.limit(cfg["REGISTER_RATE_LIMIT"], key_func=client_address)],
        # chat.send must exist; other backend views are limited when the app has them.
        **{e: [chat] for e in BACKEND_ENDPOINTS if e == "chat.send" or e in app.view_functions},
    }
    if limiter.enabled:
        # Outermost, so it holds the slot across the limiter's check and its count.
        rules["auth.login"].append(_one_login_at_a_time)
        app.teardown_request(_release_login_slot)
    for endpoint, decorators in rules.items():
        view = app.view_functions[endpoint]
        for decorate in decorators:
            view = decorate(view)
        app.view_functions[endpoint] = view
    return limiter
