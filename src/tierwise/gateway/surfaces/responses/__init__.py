"""OpenAI's Responses API (``/v1/responses``) on the chat engine: ``schema`` (the request, checked),
``items`` (input items -> chat messages), ``request`` (-> chat body), ``answer`` (chat.completion ->
Response), ``stream`` (chunks -> events), ``routes`` (the endpoints, stored conversations)."""

from .routes import register

__all__ = ["register"]
