"""The notebook chat: :class:`ChatBox`, its message box :class:`ChatInput`, the safe renderer.

The renderer and the bubbles' HTML are pure Python (:mod:`.markdown`, :mod:`.render`) and
are imported at once; the widgets need ipywidgets and anywidget (which a server install
lacks), so they are imported when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .markdown import render_markdown
from .render import describe_error, message_html, wait_time

if TYPE_CHECKING:
    from .chat_input import ChatInput
    from .chatbox import ChatBox

__all__ = [
    "ChatBox", "ChatInput", "describe_error", "message_html", "render_markdown", "wait_time",
]

# The widgets, by the module that defines them; imported on first use.
_LAZY = {"ChatBox": ".chatbox", "ChatInput": ".chat_input"}
_JUPYTER = frozenset({"ipywidgets", "anywidget", "traitlets"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name], __name__)
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in _JUPYTER:
            raise
        raise ImportError(f"securechat.widgets.{name} needs ipywidgets and anywidget, which "
                          "are not installed here (pip install 'securechat[notebook]')") from e
    value = getattr(module, name)
    globals()[name] = value  # looked up once
    return value
