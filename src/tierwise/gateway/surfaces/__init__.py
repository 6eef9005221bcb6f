"""The client-facing APIs other than chat completions, each translated to and from chat.

One subpackage per surface, each with the same parts: ``schema`` (the request, checked, with
errors in the surface's own words), ``request`` (surface request -> chat-completions body),
``answer`` (``chat.completion`` -> the surface's object), ``stream`` (chat chunks -> the surface's
events) and ``routes`` (the HTTP endpoints, ``register``); Anthropic adds ``errors`` (its error
object), Responses ``items`` (input items -> chat messages). All but ``routes`` are pure functions.
What both share: ``_chat`` (chat-format building blocks, pure) and ``_http`` (route helpers).

* :mod:`.anthropic`: ``POST /v1/messages`` (+ ``count_tokens``), Anthropic's Messages API;
* :mod:`.responses`: ``/v1/responses``, OpenAI's Responses API (with stored conversations).
"""

from . import anthropic, responses

__all__ = ["anthropic", "responses"]
