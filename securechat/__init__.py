"""securechat: a teachable, private AI chat with zero-access encryption at rest."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ApiError, ConfigError, DecryptionError, SecureChatError, TransportError

if TYPE_CHECKING:
    from .background import BackgroundServer
    from .client import ChatClient
    from .server import create_app, create_app_from_env
    from .widgets import ChatBox

__all__ = [
    "ApiError",
    "BackgroundServer",
    "ChatBox",
    "ChatClient",
    "ConfigError",
    "DecryptionError",
    "SecureChatError",
    "TransportError",
    "create_app",
    "create_app_from_env",
]
__version__ = "0.1.0"

# Imported on first use: `serve` must patch sockets and threads (gevent) before Flask,
# requests or werkzeug are loaded, and a server never needs the ipywidgets of ChatBox.
_LAZY = {"BackgroundServer": ".background", "ChatClient": ".client", "create_app": ".server",
         "create_app_from_env": ".server", "ChatBox": ".widgets"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'securechat' has no attribute {name!r}")
