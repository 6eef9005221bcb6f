"""A ``chat.completion`` as a Responses ``response`` object: pure, no I/O.

:func:`completion_to_response` for a finished answer; :func:`output_items`, :func:`response_object`,
:func:`response_usage`, :func:`token_logprobs` and :func:`finish_status` serve the stream too.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

from .._chat import first_choice, new_id, parts_text
from .request import ResponsesCall

__all__ = ["new_response_id", "response_usage", "token_logprobs", "finish_status", "output_items", "response_object",
           "completion_to_response"]


def new_response_id() -> str:
    """``resp_`` + 32 hex digits (128 bits from the OS's CSPRNG): also the decision-log row id."""
    return new_id("resp")


def response_usage(usage: dict[str, Any] | None, fallback: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """Chat ``usage`` as Responses ``usage`` (``fallback``: the engine's token counts when there is none)."""
    if not isinstance(usage, dict):
        if fallback is None:
            return None
        usage = {"prompt_tokens": fallback[0], "completion_tokens": fallback[1]}
    t_in = int(usage.get("prompt_tokens") or 0)
    t_out = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": t_in, "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
            "output_tokens": t_out, "output_tokens_details": {"reasoning_tokens": int(reasoning)},
            "total_tokens": int(usage.get("total_tokens") or t_in + t_out)}


def token_logprobs(choice_logprobs: Any) -> list[dict[str, Any]]:
    """A choice's ``logprobs.content`` as Responses ``logprobs`` (token, bytes, logprob, top_logprobs)."""
    content = choice_logprobs.get("content") if isinstance(choice_logprobs, dict) else None
    out = []
    for lp in content or ():
        if not isinstance(lp, dict):
            continue
        out.append({"token": lp.get("token", ""), "bytes": lp.get("bytes") or list(str(lp.get("token", "")).encode()),
                    "logprob": float(lp.get("logprob") or 0.0),
                    "top_logprobs": [{"token": t.get("token", ""), "bytes": t.get("bytes") or [],
                                      "logprob": float(t.get("logprob") or 0.0)}
                                     for t in lp.get("top_logprobs") or () if isinstance(t, dict)]})
    return out


def finish_status(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """(Response ``status``, ``incomplete_details``) for a chat ``finish_reason``."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def output_items(choice: dict[str, Any], *, ids: Callable[[str], str] = new_id,
                 logprobs: bool = True) -> list[dict[str, Any]]:
    """One chat choice as Response output items: a message (text and/or refusal), then function calls.
    ``logprobs``: keep the choice's token log-probabilities (only when the client asked for them: the
    cascade asks backends for logprobs of its own)."""
    msg = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    content = msg.get("content")
    if isinstance(content, list):  # some backends answer with parts
        content = parts_text(content)
    calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    parts: list[dict[str, Any]] = []
    if content or (not calls and not msg.get("refusal")):
        part: dict[str, Any] = {"type": "output_text", "text": content or "", "annotations": []}
        part["logprobs"] = token_logprobs(choice.get("logprobs")) if logprobs else []
        parts.append(part)
    if msg.get("refusal"):
        parts.append({"type": "refusal", "refusal": msg["refusal"]})
    items: list[dict[str, Any]] = []
    if parts:
        items.append({"type": "message", "id": ids("msg"), "status": status, "role": "assistant", "content": parts})
    for c in calls:
        fn = c.get("function") or {}
        items.append({"type": "function_call", "id": ids("fc"), "call_id": c.get("id") or ids("call"),
                      "name": fn.get("name") or "", "arguments": fn.get("arguments") or "", "status": "completed"})
    return items


def response_object(call: ResponsesCall, *, response_id: str, model: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, status: str = "completed",
                    incomplete_details: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                    created_at: float | None = None) -> dict[str, Any]:
    """A Response object (every field the SDK's ``Response`` model requires) around ``output``."""
    created = int(created_at if created_at is not None else time.time())
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": incomplete_details,
        "model": model, "output": output, "usage": usage,
        **copy.deepcopy(call.echo),
    }


def completion_to_response(call: ResponsesCall, completion: dict[str, Any], *, response_id: str,
                           created_at: float | None = None, usage_fallback: tuple[int, int] | None = None,
                           ids: Callable[[str], str] = new_id) -> dict[str, Any]:
    """A finished ``chat.completion`` (first choice) as a Response object."""
    choice = first_choice(completion)
    status, details = finish_status(choice.get("finish_reason"))
    return response_object(call, response_id=response_id, model=str(completion.get("model") or call.model),
                           output=output_items(choice, ids=ids, logprobs=call.logprobs),
                           usage=response_usage(completion.get("usage"), usage_fallback),
                           status=status, incomplete_details=details, created_at=created_at)
