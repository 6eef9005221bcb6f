"""Embeddings (``POST /v1/embeddings``) on the local backend: a GGUF loaded with ``embedding: true``.

``input`` is a string or a list of strings (at most ``MAX_INPUTS``). Token-id arrays are refused with
a 400: ids are tokenizer-specific, and the usual sender (LangChain's ``OpenAIEmbeddings``) sends
tiktoken ids, which would embed garbage here. Each input is tokenized with the model's tokenizer and
must fit the context window (else 400 ``context_length_exceeded`` naming the input: nothing is
silently truncated). Pooling is the GGUF's own (an embedding model declares it); a GGUF that declares
none, such as a chat model, is mean-pooled. Vectors are normalised to unit length, as OpenAI's are.

``dimensions`` keeps the first N components and renormalises (what OpenAI does for
text-embedding-3; meaningful for Matryoshka-trained models, a cruder cut for others); more than the
model has is a 400. ``encoding_format: "base64"`` sends each vector as base64 of its float32
little-endian bytes, like OpenAI. Inputs are embedded in groups, checking the deadline between them.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._llama_request import _int, reject

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
GROUP = 32  # inputs per llama.cpp call; the deadline and cancel flag are checked between groups


@dataclass
class EmbedRequest:
    texts: list[str]
    dimensions: int | None = None
    base64: bool = False


def parse_embed_request(body: Any, backend: str, n_embd: int) -> EmbedRequest:
    if not isinstance(body, dict):
        raise reject(backend, "the request body must be a JSON object")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        tokens = isinstance(texts, list) and texts and all(isinstance(t, (int, list)) for t in texts)
        raise reject(backend, "'input' must be a string or a list of strings" + (
            ": this local model embeds text (token-id arrays are tokenizer-specific; with LangChain's "
            "OpenAIEmbeddings set check_embedding_ctx_length=False)" if tokens else ""),
            code="unsupported_value" if tokens else "invalid_value", param="input")
    if len(texts) > MAX_INPUTS:
        raise reject(backend, f"'input' has {len(texts)} entries; the limit is {MAX_INPUTS}", param="input")
    if any(not t for t in texts):
        raise reject(backend, "'input' must not contain empty strings", param="input")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise reject(backend, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dims = _int(body, "dimensions", 1, backend)
    if dims is not None and dims > n_embd:
        raise reject(backend, f"'dimensions' is {dims}; this model's embeddings have {n_embd}",
                     code="unsupported_value", param="dimensions")
    return EmbedRequest(texts, dims, fmt == "base64")


def pooling_needed(llm) -> bool:
    """True when the loaded GGUF declares no pooling (a chat model): load it again mean-pooled."""
    import llama_cpp

    return llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE


def embed_texts(llm, req: EmbedRequest, backend: str, *, deadline: float,
                cancel: threading.Event) -> tuple[np.ndarray, int] | None:
    """Worker thread: unit vectors for ``req.texts`` (one row each) and the prompt tokens; None if the
    deadline passed or the caller left."""
    limit = llm.n_batch  # the whole input must be in one batch for pooling
    counts = []
    for i, text in enumerate(req.texts):
        n = len(llm.tokenize(text.encode("utf-8", "replace")))
        if n > limit:
            raise reject(backend, f"input[{i}] has {n} tokens; this model takes at most {limit}",
                         code="context_length_exceeded", param="input")
        counts.append(n)
    rows = []
    for start in range(0, len(req.texts), GROUP):
        if cancel.is_set() or time.monotonic() > deadline:
            return None
        rows.extend(llm.embed(req.texts[start:start + GROUP], truncate=False))
    vectors = np.asarray(rows, dtype=np.float64)
    if req.dimensions is not None:
        vectors = vectors[:, : req.dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0), sum(counts)


def embedding_body(vectors: np.ndarray, tokens: int, req: EmbedRequest, model: str) -> dict[str, Any]:
    """OpenAI's ``create embedding`` response."""
    data = []
    for i, v in enumerate(vectors):
        value: Any = (base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if req.base64
                      else [float(x) for x in v])
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": int(tokens), "total_tokens": int(tokens)}}
