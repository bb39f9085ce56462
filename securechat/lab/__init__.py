"""Teaching props for the tutorial notebooks; the product never imports this package."""

from __future__ import annotations

from .source import Source, show_source

__all__ = ["Source", "show_source"]
