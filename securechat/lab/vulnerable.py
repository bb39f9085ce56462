"""VULNERABLE EXAMPLE — a faithful copy of the tutorial securechat improves on. Never deploy.

It reproduces, on purpose, the tutorial's mistakes so the notebooks can attack them:
a published default secret, a login that checks no password, a per-process Fernet key,
ciphertext returned to the user, a page that inserts messages with ``innerHTML``, and
a session timeout that is defined but never enforced. Serve it only on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface

# The tutorial's fallback, published in its text: anyone can sign cookies with it.
PUBLISHED_SECRET = "your-secret-key-here"  # noqa: S105 - the point of this module

_PAGE = """<!doctype html>
<html><body>
<div id="chat"></div>
<input id="msg"><button id="send">Send</button>
<script>
const stored = %s;
for (const m of stored) {
  // The tutorial's mistake: user text inserted as HTML (stored XSS).
  document.getElementById('chat').innerHTML += '<p>' + m + '</p>';
}
</script>
</body></html>"""


def create_tutorial_app(secret_key: str | None = None) -> Flask:
    """Build the tutorial's app as it was written (insecure on purpose)."""
    app = Flask("securechat_vulnerable_tutorial")
    # The tutorial: app.secret_key = os.environ.get('SECRET_KEY', 'your-secret-key-here')
    app.secret_key = secret_key or PUBLISHED_SECRET
    # The tutorial's timeout: a constant no code ever checks. The signed cookie itself
    # stays valid for Flask's default 31 days and cannot be revoked by the server.
    app.config["SESSION_TIMEOUT"] = timedelta(minutes=30)
    # A new Fernet key per process: every stored message is lost at restart.
    cipher = Fernet(Fernet.generate_key())
    messages: list[bytes] = []
    app.extensions["tutorial"] = {"cipher": cipher, "messages": messages}

    @app.before_request
    def loopback_only() -> Any:
        # Deliberately broken code must never serve anyone but this machine.
        if not _is_loopback(request.remote_addr):
            return jsonify(error="This vulnerable example only answers 127.0.0.1."), 403
        return None

    @app.post("/login")
    def login() -> Any:
        # No password is checked: whoever names a user *is* that user.
        session["user_id"] = (request.get_json(silent=True) or {}).get("username", "")
        return jsonify(success=True)

    @app.post("/chat")
    def chat() -> Any:
        if "user_id" not in session:
            return jsonify(error="Not authenticated"), 401
        message = str((request.get_json(silent=True) or {}).get("message", ""))
        messages.append(cipher.encrypt(message.encode("utf-8")))
        reply = f"AI response to: {message}"
        # The user is shown ciphertext, not the reply.
        return jsonify(response=cipher.encrypt(reply.encode("utf-8")).decode("ascii"))

    @app.get("/whoami")
    def whoami() -> Any:
        if "user_id" not in session:
            return jsonify(error="Not authenticated"), 401
        return jsonify(user_id=session["user_id"])

    @app.get("/")
    def page() -> Any:
        shown = [cipher.decrypt(m).decode("utf-8") for m in messages]
        return _PAGE % json.dumps(shown)

    return app


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def forge_session_cookie(secret_key: str, data: dict[str, Any]) -> str:
    """Sign ``data`` as a Flask session cookie with ``secret_key``, as an attacker would."""
    app = Flask("securechat_forger")
    app.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    if serializer is None:  # pragma: no cover - only without a secret key
        raise ValueError("a secret key is required")
    return serializer.dumps(data)
