"""Rate limits (Flask-Limiter) and trusted-proxy handling, wired into an app by its factory.

Password checks are limited per client address and per username, counting failures
(:class:`LoginGuard`), and successful logins per account; registration per address;
creating conversations and asking the AI backend per user. Counters live in
``RATELIMIT_STORAGE_URI`` (``memory://`` for one process, ``redis://…`` for several, where
the one-login-per-username guard is a lease too). With Redis unreachable every limited
request is refused with a JSON 503: the limits fail closed, never open.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.strategies import FixedWindowRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from ..errors import ConfigError
from ..protocol import USERNAME_RE, client_key
from . import leases
from .http import Abort, error_response, fail
from .sessions import load_session

log = logging.getLogger(__name__)

# Views that ask the AI backend share one budget per user (retrying is not a way around it).
BACKEND_ENDPOINTS = ("chat.send", "chat.reply_again", "chat.edit", "ghost.ghost")
# Views that read or write a whole history share one budget per user (EXPORT_RATE_LIMIT).
PORTABLE_ENDPOINTS = ("export.export", "export.export_archive", "importer.import_export")


def client_address() -> str:
    """Rate-limit key of the client's address (the proxy's view of it under ``PROXY_FIX``).

    An IPv6 client counts as its /64 (see :func:`securechat.protocol.client_key`).
    """
    return "addr:" + client_key(request.remote_addr)


def _username_key(name: object) -> str:
    """Rate-limit key of a username, case-folded like the accounts are."""
    if isinstance(name, str) and USERNAME_RE.fullmatch(name):
        return "user:" + name.lower()
    # One shared bucket for names no account can have: keys stay small and bounded.
    return "user:<invalid>"


def session_user() -> str:
    """Rate-limit key of the logged-in user; the address when there is no valid session."""
    if load_session():
        return "uid:" + g.user_id
    return client_address()


class LoginGuard:
    """The login limits: every password check is counted when it is made.

    Counting an attempt only once it was answered let parallel guesses all pass the
    check before any was counted (12 password checks against a limit of 5). Here each
    attempt takes its unit first, from the address's and the username's budget of
    failures; a successful login gives both back (people who log in often are never
    blocked) and takes one from the account's budget of successes instead. One login per
    username is answered at a time (``one_at_a_time``: a cap of 1 per username, in Redis
    when the limits are). Every route that checks a password goes through here.
    """

    def __init__(self, limiter: Limiter, failed: str, succeeded: str,
                 one_at_a_time: leases.PerKeyCap, kind: str = "login") -> None:
        self._kind = kind  # "login", or "recovery": budgets of their own
        self._strategy = FixedWindowRateLimiter(limiter.storage)
        self._failed, self._succeeded = parse_many(failed), parse_many(succeeded)
        self._busy = one_at_a_time

    @contextlib.contextmanager
    def attempt(self, address: str, username: str) -> Iterator[None]:
        """Count one password check for ``address`` and ``username``; 429 when over budget."""
        with self._one_at_a_time(username):
            for limit in self._succeeded:
                if not self._strategy.test(limit, self._kind + "-ok", username):
                    _refuse(self._wait(limit, self._kind + "-ok", username))
            taken: list[tuple[RateLimitItem, str, float]] = []
            for key in (address, username):
                for limit in self._failed:
                    ok = self._strategy.hit(limit, self._kind + "-failed", key)
                    taken.append((limit, key, self._window(limit, key)))
                    if not ok:
                        self._give_back(taken)
                        # For the operator: which budget, never the name or the address.
                        log.info("login refused: %s of failed attempts per %s reached",
                                 limit, key.partition(":")[0])
                        _refuse(self._wait(limit, self._kind + "-failed", key))
            try:
                yield
            except Abort as e:
                if e.code == 503:
                    self._give_back(taken)  # the server was busy: no password was checked
                raise
            self._give_back(taken)
            for limit in self._succeeded:
                self._strategy.hit(limit, self._kind + "-ok", username)

    @contextlib.contextmanager
    def _one_at_a_time(self, username: str) -> Iterator[None]:
        lease = self._busy.acquire(username)
        if lease is None:
            fail(429, "rate_limited", "Another login for this account is in progress.",
                 {"Retry-After": "1"})
        try:
            yield
        finally:
            lease.release()

    def _give_back(self, taken: list[tuple[RateLimitItem, str, float]]) -> None:
        for limit, key, window in taken:
            # Only into the window the unit came from, while it surely lasts: given back
            # after it rolled over, it would be a credit (a negative count) in the next one.
            # Redis tells a window's end to the second only (and anew each time it is
            # asked), so the ends are compared with a second's margin, never for equality.
            if time.time() < window - 1 and self._window(limit, key) < window + 1.5:
                self._strategy.hit(limit, self._kind + "-failed", key, cost=-1)

    def _window(self, limit: RateLimitItem, key: str) -> float:
        """When the current window of ``limit`` for ``key`` ends (to the second, with Redis)."""
        return self._strategy.get_window_stats(limit, self._kind + "-failed", key).reset_time

    def _wait(self, limit: RateLimitItem, *keys: str) -> int:
        reset = self._strategy.get_window_stats(limit, *keys).reset_time
        return max(1, math.ceil(reset - time.time()))


def _refuse(wait: int) -> NoReturn:
    # The same words as every other 429; clients say how long to wait from Retry-After.
    fail(429, "rate_limited", "Too many requests; slow down.", {"Retry-After": str(wait)})


def _store_down(e: StorageError) -> Response:
    """Redis failed while counting: refuse (503), never let the request through uncounted."""
    # One line, no traceback: an outage is the operator's to fix, not a bug in the code.
    log.warning("the rate-limit store failed (%s) on %s %s: answered 503",
                type(e.storage_error).__name__, request.method, request.path)
    response = error_response(503, "unavailable", "The server cannot check its limits right "
                              "now; try again in a moment.")
    response.headers["Retry-After"] = "5"
    return response


def _read_limit_for_headers(response: Response) -> Response:
    """Read what Flask-Limiter's headers show now; without Redis, answer without them.

    Redis failing after the check but before the answer would otherwise fail Flask-Limiter's
    after-request hook, where no error handler applies: a 500 with a traceback. The
    request was counted already; only its ``X-RateLimit-*`` headers are left out.
    """
    limiter: Limiter = current_app.extensions["securechat.limiter"]
    current = limiter.current_limit
    if current is not None:
        try:
            current.reset_at  # noqa: B018 - computed once and kept for the headers
        except StorageError as e:
            log.warning("the rate-limit store failed (%s) on %s %s after the check: "
                        "answered without rate-limit headers",
                        type(e.storage_error).__name__, request.method, request.path)
            limiter.context.reset()
    return response


def login_attempt(username: object) -> contextlib.AbstractContextManager[None]:
    """Count a password check for this request's address and ``username`` (see LoginGuard)."""
    return _attempt("securechat.login_guard", username)


def recovery_attempt(username: object) -> contextlib.AbstractContextManager[None]:
    """Count a recovery-code check, in budgets of its own (``RECOVERY_RATE_LIMIT``)."""
    return _attempt("securechat.recovery_guard", username)


def _attempt(name: str, username: object) -> contextlib.AbstractContextManager[None]:
    guard: LoginGuard | None = current_app.extensions[name]
    if guard is None:  # limits switched off (tests and demos)
        return contextlib.nullcontext()
    return guard.attempt(client_address(), _username_key(username))


def init_app(app: Flask) -> Limiter:
    """Trust ``PROXY_FIX`` proxies for the client address and apply the configured limits.

    Call after every blueprint is registered: the limited views are wrapped by endpoint.
    """
    cfg = app.config
    if cfg.get("PROXY_FIX", 0):
        # Only X-Forwarded-For is trusted: HTTPS is decided by the HTTPS setting, not a header.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg["PROXY_FIX"],  # type: ignore[method-assign]
                                x_proto=0, x_host=0, x_port=0, x_prefix=0)
    try:
        # With Redis: the pool (and key prefix) capacity.init_app connected and checked.
        limiter = Limiter(client_address, app=app, storage_uri=cfg["RATELIMIT_STORAGE_URI"],
                          storage_options=leases.storage_options(app),
                          headers_enabled=True, enabled=bool(cfg["RATELIMIT_ENABLED"]))
    except ConfigurationError as e:
        raise ConfigError(f"RATELIMIT_STORAGE_URI cannot be used: {e}") from e
    app.extensions["securechat.limiter"] = limiter
    # A disabled limiter has no storage to count in.
    enabled = limiter.enabled
    app.extensions["securechat.login_guard"] = LoginGuard(
        limiter, cfg["LOGIN_RATE_LIMIT"], cfg["LOGIN_SUCCESS_RATE_LIMIT"],
        leases.per_key(app, "login", 1)) if enabled else None
    app.extensions["securechat.recovery_guard"] = LoginGuard(
        limiter, cfg["RECOVERY_RATE_LIMIT"], cfg["LOGIN_SUCCESS_RATE_LIMIT"],
        leases.per_key(app, "recovery", 1), "recovery") if enabled else None
    app.register_error_handler(StorageError, _store_down)
    # Registered after Flask-Limiter's own hook, so it runs before it (Flask runs them
    # in reverse): the headers' numbers are read here, where a failure can be caught.
    app.after_request(_read_limit_for_headers)
    chat = limiter.shared_limit(cfg["CHAT_RATE_LIMIT"], scope="backend", key_func=session_user)
    portable = limiter.shared_limit(cfg["EXPORT_RATE_LIMIT"], scope="portable",
                                    key_func=session_user)
    rules: dict[str, list[Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
        "auth.register": [limiter.limit(cfg["REGISTER_RATE_LIMIT"], key_func=client_address)],
        "chat.create": [limiter.limit(cfg["CREATE_RATE_LIMIT"], key_func=session_user)],
        "search.search": [limiter.limit(cfg["SEARCH_RATE_LIMIT"], key_func=session_user)],
        **{e: [portable] for e in PORTABLE_ENDPOINTS},
        # chat.send must exist; other backend views are limited when the app has them.
        **{e: [chat] for e in BACKEND_ENDPOINTS if e == "chat.send" or e in app.view_functions},
    }
    for endpoint, decorators in rules.items():
        view = app.view_functions[endpoint]
        for decorate in decorators:
            view = decorate(view)
        app.view_functions[endpoint] = view
    return limiter
