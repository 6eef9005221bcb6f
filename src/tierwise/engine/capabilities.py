"""What a request needs from a model, and what each model can do.

A request *needs* a capability when it uses the matching field; a model *has* the capabilities its
config declares (``capabilities: [...]``) or, when it declares none, its backend's defaults:

===============  =================================================  ============  =============
capability       needed when the request has                         openai        llama_cpp
===============  =================================================  ============  =============
``tools``        ``tools``/``functions`` (unless tool_choice none),  yes           if the GGUF's
                 or tool calls / tool results in the conversation                  template has tools
``json_object``  ``response_format.type == "json_object"``          yes           yes (grammar)
``json_schema``  ``response_format.type == "json_schema"``          yes           yes (grammar)
``vision``       an ``image_url`` / ``image`` content part           declare it    no
``audio``        an ``input_audio`` part or ``modalities: [audio]``  declare it    no
``logprobs``     ``logprobs: true`` or ``top_logprobs``              yes           yes
``n``            ``n > 1``                                           yes           no
``completions``  a ``POST /v1/completions`` request (legacy text)    yes           yes (raw prompt)
``embeddings``   a ``POST /v1/embeddings`` request                   declare it    ``embedding: true``
===============  =================================================  ============  =============

``embeddings`` marks an *embedding model*: it has no other capability, answers ``/v1/embeddings``
only and is never a chat candidate (``engine/passthrough.py``).

Nothing is silently dropped: a request is routed only among models that have every capability it
needs, and when none has them the client gets a 400 naming the capability and the models.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..backends.base import CAPABILITIES

__all__ = ["CAPABILITIES", "required", "declared"]

_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})


def required(body: dict[str, Any]) -> frozenset[str]:
    """The capabilities a chat-completions body needs."""
    needs: set[str] = set()
    if (body.get("tools") or body.get("functions")) and body.get("tool_choice") != "none":
        needs.add("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        needs.add(fmt["type"])
    if body.get("logprobs") or body.get("top_logprobs"):
        needs.add("logprobs")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        needs.add("n")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        needs.add("audio")
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        if m.get("tool_calls") or m.get("role") in ("tool", "function"):
            needs.add("tools")
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _IMAGE_PARTS:
                    needs.add("vision")
                elif kind in _AUDIO_PARTS:
                    needs.add("audio")
    return frozenset(needs)


def declared(config_value: Iterable[str] | None, backend_default: Iterable[str]) -> frozenset[str]:
    """A model's capabilities: what its config lists, else its backend's defaults."""
    return frozenset(backend_default if config_value is None else config_value)
