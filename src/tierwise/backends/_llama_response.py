"""OpenAI response objects of the local backend: the ``chat.completion`` body and stream chunks."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ._llama_request import LocalRequest
from ._llama_tools import parse_tool_calls


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(16)


def usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def logprobs(req: LocalRequest, entries: list[dict]) -> dict | None:
    return {"content": entries, "refusal": None} if req.logprobs else None


def assistant_message(req: LocalRequest, text: str, finish: str) -> tuple[dict[str, Any], str]:
    """The assistant message for the generated text (tool-call blocks parsed) and its finish reason: an answer
    max_tokens cut stays ``length`` (as OpenAI reports it) even with the complete calls it holds."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if req.tool_mode != "off":
        parsed = parse_tool_calls(text, req.tool_names, parallel=req.parallel_tool_calls, cut=finish == "length")
        if parsed is not None:
            message["content"], message["tool_calls"] = parsed
            return message, "length" if finish == "length" else "tool_calls"
    return message, finish


def completion_body(req: LocalRequest, *, model: str, fingerprint: str, text: str, finish: str,
                    entries: list[dict], tokens_in: int, tokens_out: int, stop: str | None = None) -> dict[str, Any]:
    """``stop``: the client's stop string that ended the answer, reported as the choice's ``stop_reason``
    (vLLM's field; the Anthropic surface's ``stop_sequence``)."""
    message, finish = assistant_message(req, text, finish)
    choice = {"index": 0, "message": message, "logprobs": logprobs(req, entries), "finish_reason": finish}
    if stop is not None and finish == "stop":
        choice["stop_reason"] = stop
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [choice],
        "usage": usage(tokens_in, tokens_out),
    }


class Chunks:
    """The ``chat.completion.chunk`` objects of one stream (one ``id``/``created`` for all)."""

    def __init__(self, model: str, fingerprint: str, include_usage: bool):
        self.head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "system_fingerprint": fingerprint}
        self.include_usage = include_usage

    def delta(self, delta: dict, finish: str | None = None, logprobs: dict | None = None,
              stop: str | None = None) -> dict[str, Any]:
        chunk = {**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if stop is not None and finish == "stop":
            chunk["choices"][0]["stop_reason"] = stop
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk but the last carries "usage": null
        return chunk

    def usage(self, tokens_in: int, tokens_out: int) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage(tokens_in, tokens_out)}
