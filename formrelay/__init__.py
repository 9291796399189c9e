"""formrelay: an embeddable form backend that OpenPGP-encrypts every submission."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Flask is imported when an app is made: the core runs without it
    from flask import Flask

__version__ = "0.1.0"


def create_app(config: Any = None, *, environ: Mapping[str, str] | None = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The app factory. `config` is a Settings, a TOML path, a parsed mapping, or None
    (then FORMRELAY_CONFIG names the file); or `services.build(...)`'s result."""
    from .web import build_app

    return build_app(config, environ=environ, clock=clock)


__all__ = ["__version__", "create_app"]
