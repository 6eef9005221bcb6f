"""Legacy completions (``POST /v1/completions``) on the local backend: the request read, the answer built.

The prompt is decoded from as it is, with no chat template: the client writes any template markers
itself, and special tokens in it (``<|im_start|>``) are read as such, as llama.cpp's own server
does (the client owns the whole prompt; there is no other party's turn to protect). The sampling
settings and the decode loop are the chat ones (``_llama_request.sampling``, ``_llama_decode``).

OpenAI's legacy defaults and shapes: ``max_tokens`` defaults to **16**; ``prompt`` is a string (or
a list of one string); ``echo`` puts the prompt before the answer; ``logprobs`` (an integer 0-5)
returns the legacy ``{tokens, token_logprobs, top_logprobs, text_offset}`` object for the generated
tokens. Refused with a 400 naming the field: several prompts, token-id prompts (token ids are
tokenizer-specific), ``suffix`` (insertion), ``best_of`` > 1, ``echo`` with ``logprobs`` (prompt
log-probabilities would need logits for every prompt token), ``n`` > 1, tools.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..config import DEFAULT_COMPLETIONS_MAX_TOKENS
from ._llama_request import LocalRequest, _int, reject, sampling
from ._llama_response import usage



def parse_text_request(body: Any, backend: str) -> LocalRequest:
    settings = sampling(body, backend)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise reject(backend, "this model answers one prompt per request: send the prompts one by one",
                     code="unsupported_value", param="prompt")
    if not isinstance(prompt, str):
        raise reject(backend, "'prompt' must be a string: this local model reads text (token-id prompts are "
                     "tokenizer-specific)", code="unsupported_value", param="prompt")
    if body.get("suffix"):
        raise reject(backend, "'suffix' (insertion) is not supported by this model", code="unsupported_value",
                     param="suffix")
    best_of = _int(body, "best_of", 1, backend)
    if best_of is not None and best_of > 1:
        raise reject(backend, "'best_of' > 1 is not supported by this model", code="unsupported_value",
                     param="best_of")
    lp = _int(body, "logprobs", 0, backend)
    if lp is not None and lp > 5:
        raise reject(backend, "'logprobs' must be an integer between 0 and 5", param="logprobs")
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise reject(backend, "'echo' must be a boolean", param="echo")
    if echo and lp is not None:
        raise reject(backend, "'echo' together with 'logprobs' is not supported (no prompt log-probabilities)",
                     code="unsupported_value", param="echo")
    if body.get("tools") or body.get("functions"):
        raise reject(backend, "tools are for /v1/chat/completions, not legacy completions", param="tools")
    settings["max_tokens"] = settings["max_tokens"] or DEFAULT_COMPLETIONS_MAX_TOKENS
    return LocalRequest(messages=[], prompt=prompt, echo=bool(echo), logprobs=lp is not None,
                        top_logprobs=lp or 0, **settings)


def legacy_logprobs(entries: list[dict], offset: int) -> dict[str, list]:
    """Chat-style logprob entries as the legacy object (``text_offset`` counted from ``offset``)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        out["tokens"].append(e["token"])
        out["token_logprobs"].append(e["logprob"])
        out["top_logprobs"].append({t["token"]: t["logprob"] for t in e.get("top_logprobs") or ()})
        out["text_offset"].append(offset)
        offset += len(e["token"])
    return out


class TextAnswer:
    """The ``text_completion`` object, or chunks, of one request (one ``id``/``created`` for all)."""

    def __init__(self, req: LocalRequest, model: str, fingerprint: str):
        self.req = req
        self.head = {"id": "cmpl-" + secrets.token_hex(16), "object": "text_completion",
                     "created": int(time.time()), "model": model, "system_fingerprint": fingerprint}
        self.offset = 0  # text_offset of the next token (echo and logprobs never come together)

    def _choice(self, text: str, finish: str | None, entries: list[dict]) -> dict[str, Any]:
        lp = None
        if self.req.logprobs:
            lp = legacy_logprobs(entries, self.offset)
            self.offset += sum(len(e["token"]) for e in entries)
        return {"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}

    def body(self, text: str, finish: str, entries: list[dict], tokens_in: int, tokens_out: int) -> dict[str, Any]:
        if self.req.echo:
            text = (self.req.prompt or "") + text
        return {**self.head, "choices": [self._choice(text, finish, entries)], "usage": usage(tokens_in, tokens_out)}

    def chunk(self, text: str, finish: str | None = None, entries: list[dict] | None = None) -> dict[str, Any]:
        c = {**self.head, "choices": [self._choice(text, finish, entries or [])]}
        if self.req.include_usage:
            c["usage"] = None  # as OpenAI: every chunk but the last carries "usage": null
        return c

    def usage_chunk(self, tokens_in: int, tokens_out: int) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage(tokens_in, tokens_out)}
