"""The bodies of the forwarded endpoints, ``/v1/embeddings`` and legacy ``/v1/completions``, checked.

As for chat, the client's body is kept exactly as sent (every field, known or not, is forwarded) and
only what the engine relies on is checked, strictly (no coercion: ``"stream": "yes"`` is refused),
plus the few numeric fields whose ranges OpenAI documents, so a malformed request gets the same
answer whichever backend would have taken it. Errors are what OpenAI answers on these endpoints: a
400 in its error shape, ``param`` naming the field (``input``, ``prompt[2]``), ``code``
``missing_required_parameter`` / ``invalid_type`` / ``invalid_value`` (``invalid_json`` for a body
that is not a JSON object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..config import DEFAULT_COMPLETIONS_MAX_TOKENS
from ..errors import RequestError
from .body import load_json
from .request import MAX_MODEL_NAME

MAX_INPUTS = 2048  # OpenAI's limit on embedding inputs (and prompts) per request

# field -> (type, low, high) for the optional numbers OpenAI range-checks on these endpoints
_NUMBERS: dict[str, dict[str, tuple[type, float, float]]] = {
    "embeddings": {"dimensions": (int, 1, 1 << 20)},
    "completions": {"max_tokens": (int, 0, 1 << 24), "n": (int, 1, 128), "logprobs": (int, 0, 5),
                    "best_of": (int, 1, 128), "temperature": (float, 0, 2), "top_p": (float, 0, 1),
                    "frequency_penalty": (float, -2, 2), "presence_penalty": (float, -2, 2)},
}


def _error(message: str, param: str | None, code: str = "invalid_value") -> RequestError:
    return RequestError(message, status=400, param=param, code=code)


@dataclass
class PassRequest:
    """One parsed request. ``body`` is the client's, untouched; the rest is read from it."""

    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    text: str  # the input / prompt as text: what the prompt hash (and --log-prompts) records
    needs: frozenset[str]  # the endpoint's capability
    max_tokens: int = 1  # the most tokens the answer may have (embeddings: none; what budgets reserve)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The input as one user message: what a per-key budget estimates the prompt from."""
        return [{"role": "user", "content": self.text}]

    def forward(self) -> dict[str, Any]:
        """The body to send a backend: the client's, without ``model`` (the backend sets its own)."""
        return {k: v for k, v in self.body.items() if k != "model"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _texts(value: Any, field: str, *, allow_empty: bool) -> list[str]:
    """A string, or a non-empty list of strings / token ids / lists of token ids, as text pieces."""
    if isinstance(value, str):
        if not value and not allow_empty:
            raise _error(f"'{field}' must not be an empty string", field)
        return [value]
    if not isinstance(value, list) or not value:
        raise _error(f"'{field}' must be a string or a non-empty list of strings or token ids", field,
                     "invalid_type" if not isinstance(value, list) else "invalid_value")
    if len(value) > MAX_INPUTS:
        raise _error(f"'{field}' has {len(value)} entries; the limit is {MAX_INPUTS}", field)
    if all(_is_int(t) for t in value):
        if any(t < 0 for t in value):
            raise _error(f"'{field}': token ids must be >= 0", field)
        return [json.dumps(value)]
    out = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(item, str):
            if not item and not allow_empty:
                raise _error(f"'{where}' must not be an empty string", where)
        elif isinstance(item, list) and item and all(_is_int(t) and t >= 0 for t in item):
            item = json.dumps(item)
        else:
            raise _error(f"'{where}' must be a string or a non-empty list of token ids (integers >= 0)",
                         where, "invalid_type")
        out.append(item)
    kinds = {isinstance(v, str) for v in value}
    if len(kinds) > 1:
        raise _error(f"'{field}' mixes strings and token-id lists", field, "invalid_type")
    return out


def _check_numbers(endpoint: str, body: dict[str, Any]) -> None:
    for key, (kind, lo, hi) in _NUMBERS[endpoint].items():
        v = body.get(key)
        if v is None:
            continue
        ok = _is_int(v) if kind is int else isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise _error(f"'{key}' must be {'an integer' if kind is int else 'a number'}", key, "invalid_type")
        if not lo <= v <= hi:
            raise _error(f"'{key}' must be between {lo:g} and {hi:g} (got {v})", key)


def parse(endpoint: str, raw: bytes | str | dict[str, Any]) -> PassRequest:
    """Check a ``/v1/embeddings`` or ``/v1/completions`` body (``endpoint``: ``embeddings`` / ``completions``)."""
    body = raw
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            body = load_json(raw)
        except ValueError as exc:
            raise _error(f"request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _error("request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if model is None:
        raise _error("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
        raise _error(f"'model' must be a non-empty string of at most {MAX_MODEL_NAME} characters", "model",
                     "invalid_type")
    field = "input" if endpoint == "embeddings" else "prompt"
    if field not in body:
        raise _error(f"missing required parameter '{field}'", field, "missing_required_parameter")
    texts = _texts(body[field], field, allow_empty=endpoint == "completions")
    _check_numbers(endpoint, body)
    stream, include_usage, max_tokens = False, False, 1
    if endpoint == "embeddings":
        if body.get("encoding_format") not in (None, "float", "base64"):
            raise _error("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    else:
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _error("'stream' must be a boolean", "stream", "invalid_type")
        if body.get("echo") is not None and not isinstance(body["echo"], bool):
            raise _error("'echo' must be a boolean", "echo", "invalid_type")
        opts = body.get("stream_options")
        if opts is not None and (not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool)):
            raise _error("'stream_options' must be an object with a boolean 'include_usage'", "stream_options",
                         "invalid_type")
        include_usage = bool(opts and opts.get("include_usage"))
        choices = max(body.get("n") or 1, body.get("best_of") or 1) * len(texts)
        max_tokens = (body.get("max_tokens") or DEFAULT_COMPLETIONS_MAX_TOKENS) * choices
    return PassRequest(body, model, bool(stream), include_usage, "\n".join(texts), frozenset({endpoint}), max_tokens)
