"""The HTTP shell around the engine: parse, call the engine, encode. Nothing else lives here."""

from .app import create_app

__all__ = ["create_app"]
