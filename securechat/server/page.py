"""The browser chat page: one static HTML page with external JS and CSS, under the app's CSP.

The page talks to the JSON API only; it inserts a person's message with ``textContent``,
builds a reply's safe Markdown as DOM nodes (``static/markdown.js``, never parsed as HTML)
and sends the ``X-CSRF-Token`` header, so the strict CSP (no inline script) holds.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).with_name("static")

# Its own URL prefix, so it never collides with a static route of the app.
bp = Blueprint("web", __name__, static_folder="static", static_url_path="/assets")


@bp.get("/")
def index() -> Response:
    """The chat page (login, conversations, messages)."""
    response = send_from_directory(STATIC, "index.html", mimetype="text/html")
    # The page is the same for everyone, but must not be served stale after an upgrade.
    response.cache_control.no_cache = True
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The icon browsers ask for on their own (an SVG)."""
    return send_from_directory(STATIC, "favicon.svg", mimetype="image/svg+xml")
