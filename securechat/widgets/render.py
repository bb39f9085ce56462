"""A chat bubble's HTML and the sentences errors are shown as: pure functions, no widgets.

A user's text is escaped with :func:`html.escape` and nothing else; an assistant's goes
through :func:`render_markdown`, which escapes it first and only then adds its few
attribute-free tags. Labels and styles are fixed strings of ours, never message text.
"""

from __future__ import annotations

import html
import math

from ..errors import ApiError, SecureChatError, TransportError
from .markdown import render_markdown

_ROLE_LABEL = {"user": "You", "assistant": "Assistant"}
_BUBBLE = ("padding:6px 10px;margin:3px 0;border-radius:10px;max-width:85%;"
           "overflow-wrap:anywhere;line-height:1.4;")
_ROLE_STYLE = {
    "user": _BUBBLE + "margin-left:auto;background:var(--jp-brand-color3,#dbeafe);"
                      "color:var(--jp-ui-font-color0,#111);",
    "assistant": _BUBBLE + "margin-right:auto;background:var(--jp-layout-color2,#eee);"
                           "color:var(--jp-ui-font-color0,#111);",
}


def message_html(role: str, content: str, incomplete: bool = False) -> str:
    """One chat bubble: user text escaped as is, assistant text through render_markdown."""
    if role == "user":
        body = f'<div style="white-space:pre-wrap">{html.escape(content, quote=True)}</div>'
    else:
        body = render_markdown(content)
    label = _ROLE_LABEL.get(role, "Assistant") + (" · cut short" if incomplete else "")
    style = _ROLE_STYLE.get(role, _ROLE_STYLE["assistant"])
    kind = "user" if role == "user" else "assistant"
    # tex2jax_ignore: JupyterLab's MathJax must not turn "$5 and $6" into formulas.
    return (f'<div class="securechat-msg securechat-{kind} tex2jax_ignore" style="{style}">'
            f'<div style="font-size:0.8em;opacity:0.7">{label}</div>{body}</div>')


def wait_time(seconds: float) -> str:
    """How long to wait, for people: "1 second", "42 seconds", "3 minutes"."""
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return "1 second" if whole == 1 else f"{whole} seconds"
    return f"{math.ceil(whole / 60)} minutes"


def describe_error(error: SecureChatError) -> str:
    """A readable sentence for an error, with what the person can do about it."""
    if isinstance(error, TransportError):
        return f"{error.message} Check the server, then try again."
    if not isinstance(error, ApiError):
        return str(error)
    wait = error.retry_after
    again = "Try again." if wait is None else f"Try again in {wait_time(wait)}."
    if error.status == 429:
        return f"{error.message} {'Wait a moment, then try again.' if wait is None else again}"
    if error.status >= 500:
        return f"The server could not answer: {error.message} (HTTP {error.status}). {again}"
    return error.message
