"""The notebook chat: :class:`ChatBox`, its message box :class:`ChatInput`, the safe renderer.

The renderer and the bubble markup are pure Python (:mod:`.markdown`, :mod:`.render`) and
import here at once; the widgets need ipywidgets and anywidget (the ``securechat[notebook]``
extra), so they are imported only when first asked for, and a server install without Jupyter
can still import this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .markdown import render_markdown

if TYPE_CHECKING:
    from .chat_input import ChatInput
    from .chatbox import ChatBox, describe_error, message_html, wait_time

__all__ = [
    "ChatBox", "ChatInput", "describe_error", "message_html", "render_markdown", "wait_time",
]

# Name -> the module that defines it, imported on first use.
_LAZY = {
    "ChatBox": ".chatbox",
    "ChatInput": ".chat_input",
    "describe_error": ".chatbox",
    "message_html": ".chatbox",
    "wait_time": ".chatbox",
}


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
                          "are not installed here (pip install ipywidgets anywidget)") from e
    value = getattr(module, name)
    globals()[name] = value  # looked up once
    return value
