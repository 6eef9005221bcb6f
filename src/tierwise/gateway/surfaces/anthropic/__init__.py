"""Anthropic's Messages API (``POST /v1/messages``) on the chat engine: ``schema`` (the request,
checked), ``request`` (-> chat body), ``answer`` (chat.completion -> message), ``stream`` (chunks
-> events), ``errors`` (Anthropic's error object), ``routes`` (the endpoints)."""

from .routes import register

__all__ = ["register"]
