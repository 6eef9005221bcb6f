"""The stub backend's answers on ``POST /v1/embeddings`` and legacy ``POST /v1/completions``.

``embeddings_body``: one deterministic unit vector per input (``DIMS`` components, or ``dimensions``
when the request sets it), made from a SHA-256 of the input's text (token-id inputs: of their JSON),
as floats or, with ``encoding_format: "base64"``, base64 of float32 little-endian bytes, like OpenAI;
``usage.prompt_tokens`` is a quarter of the characters (at least 1 per input).

``completion_chunks``: ``"echo: <prompt>"`` per prompt (one choice per prompt), cut to
``max_tokens`` words (then ``finish_reason: "length"``), as one ``text_completion`` object or as its
stream chunks (a usage chunk last only with ``stream_options.include_usage``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

DIMS = 8


def vector(text: str, dims: int = DIMS) -> list[float]:
    """The stub's embedding of ``text``: a unit vector from its SHA-256 (repeated as needed)."""
    raw = b""
    while len(raw) < 2 * dims:
        raw += hashlib.sha256(raw + text.encode("utf-8")).digest()
    v = [(int.from_bytes(raw[2 * i:2 * i + 2], "big") - 32767.5) / 32767.5 for i in range(dims)]
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


def _pieces(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [json.dumps(value)]
    return [v if isinstance(v, str) else json.dumps(v) for v in value or [""]]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def embeddings_body(body: dict, model: str) -> dict[str, Any]:
    texts = _pieces(body.get("input"))
    dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else DIMS
    data = []
    for i, t in enumerate(texts):
        v = vector(t, dims)
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *v)).decode() \
            if body.get("encoding_format") == "base64" else v
        data.append({"object": "embedding", "index": i, "embedding": value})
    n = sum(_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}}


def completion_chunks(body: dict, model: str, cid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the ``text_completion`` object, the chunks a stream of it sends)."""
    prompts = _pieces(body.get("prompt"))
    limit = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else None
    head = {"id": cid, "object": "text_completion", "created": 1700000000, "model": model}
    choices, chunks, t_out = [], [], 0
    for i, prompt in enumerate(prompts):
        words = f"echo: {prompt}".split(" ")
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        pieces = [w if k == 0 else " " + w for k, w in enumerate(words)]
        t_out += len(pieces)
        choices.append({"text": "".join(pieces), "index": i, "logprobs": None, "finish_reason": finish})
        chunks += [{**head, "choices": [{"text": p, "index": i, "logprobs": None, "finish_reason": None}]}
                   for p in pieces]
        chunks.append({**head, "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": finish}]})
    t_in = sum(_tokens(p) for p in prompts)
    usage = {"prompt_tokens": t_in, "completion_tokens": t_out, "total_tokens": t_in + t_out}
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage"):
        chunks.append({**head, "choices": [], "usage": usage})
    return {**head, "choices": choices, "usage": usage}, chunks
