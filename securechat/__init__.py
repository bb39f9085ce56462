"""securechat: a teachable, private AI chat with zero-access encryption at rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .background import BackgroundServer
from .client import ChatClient
from .errors import ApiError, ConfigError, DecryptionError, SecureChatError, TransportError
from .server import create_app, create_app_from_env

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # ipywidgets is imported only by those who use the widget, not by the server.
    if name == "ChatBox":
        from .widgets import ChatBox

        return ChatBox
    raise AttributeError(f"module 'securechat' has no attribute {name!r}")
