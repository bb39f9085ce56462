"""AI backends behind one small interface: the offline echo (default) and OpenAI-compatible."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import (
    BackendBadResponse,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Responder,
    Turn,
    trim_history,
)
from .echo import EchoResponder
from .openai import OpenAIResponder

__all__ = [
    "BackendBadResponse",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "EchoResponder",
    "OpenAIResponder",
    "Responder",
    "Turn",
    "make_responder",
    "trim_history",
]


def make_responder(config: Mapping[str, Any]) -> Responder:
    """Build the responder named by ``RESPONDER`` in the config."""
    name = str(config.get("RESPONDER", "echo")).lower()
    if name == "echo":
        return EchoResponder()
    if name == "openai":
        return OpenAIResponder.from_config(config)
    raise ConfigError(f"unknown RESPONDER {name!r}; available: echo, openai")
