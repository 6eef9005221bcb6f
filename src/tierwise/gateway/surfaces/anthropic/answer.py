"""A ``chat.completion`` as an Anthropic ``message``: pure, no I/O.

A text block, then one ``tool_use`` block per tool call; ``stop_reason`` from ``finish_reason``;
usage in Anthropic's names. :func:`stop_reason` and :func:`anthropic_usage` serve the stream too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .._chat import first_choice, parts_text

__all__ = ["to_message", "stop_reason", "anthropic_usage", "tool_input"]


def stop_reason(finish: Any, *, matched: Any = None, stop_sequences: Iterable[str] = (),
                tool_use: bool = False) -> tuple[str, str | None]:
    """(``stop_reason``, ``stop_sequence``) for an OpenAI ``finish_reason``.

    ``matched`` is the stop string some backends (vLLM) report as the choice's ``stop_reason``; a
    plain ``stop`` with tool calls in the answer is ``tool_use`` (some servers say ``stop`` then)."""
    if finish in ("tool_calls", "function_call") or (tool_use and finish in (None, "stop")):
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and matched in set(stop_sequences):
        return "stop_sequence", matched
    return "end_turn", None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def anthropic_usage(usage: Any, tokens_in: int = 0, tokens_out: int = 0) -> dict[str, int]:
    """OpenAI ``usage`` in Anthropic's names (``tokens_in``/``tokens_out`` when it has none).

    OpenAI's ``prompt_tokens`` include cached ones; Anthropic counts them apart
    (``cache_read_input_tokens``), so the input total stays the same."""
    u = usage if isinstance(usage, dict) else {}
    t_in = _int(u.get("prompt_tokens"))
    t_out = _int(u.get("completion_tokens"))
    t_in = tokens_in if t_in is None else t_in
    t_out = tokens_out if t_out is None else t_out
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
    out = {"input_tokens": max(0, t_in - (cached or 0)), "output_tokens": t_out}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return parts_text(content) if isinstance(content, list) else ""


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` string as a ``tool_use`` ``input`` object. Arguments that are not
    a JSON object are kept, as ``{"_raw_arguments": <string>}``, rather than dropped."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def to_message(completion: dict[str, Any], *, msg_id: str, model: str, stop_sequences: Iterable[str] = (),
               tokens_in: int = 0, tokens_out: int = 0) -> dict[str, Any]:
    """A ``chat.completion`` (its first choice) as an Anthropic ``message``."""
    choice = first_choice(completion)
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    if not calls and isinstance(msg.get("function_call"), dict):  # the legacy single-function shape
        calls = [{"id": f"toolu_{msg_id}_0", "function": msg["function_call"]}]
    for k, c in enumerate(calls):
        fn = c.get("function") or {}
        content.append({"type": "tool_use", "id": c.get("id") or f"toolu_{msg_id}_{k}",
                        "name": fn.get("name") or "", "input": tool_input(fn.get("arguments"))})
    if not content:
        content.append({"type": "text", "text": ""})
    reason, seq = stop_reason(choice.get("finish_reason"), matched=choice.get("stop_reason"),
                              stop_sequences=stop_sequences, tool_use=bool(calls))
    if refusal and not text and reason == "end_turn":
        reason = "refusal"
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": seq,
            "usage": anthropic_usage(completion.get("usage"), tokens_in, tokens_out)}
