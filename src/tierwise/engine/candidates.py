"""Which pyramid models may answer a request: small checks, each able to rule a model out.

Like LiteLLM's pre-call checks: every check is a function ``(request, slot) -> reason | None``;
a model passes when no check returns a reason. The reasons are kept (``Candidates.excluded``) so the
decision log and the error message say why a model was not considered.

The context check is cheap first: a prompt whose UTF-8 size plus per-message overhead already fits
cannot have more tokens than that, so the backend's tokenizer (slow for long local prompts) runs
only for prompts near the limit, and then in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from ..backends.base import message_text
from ..config import DEFAULT_ANSWER_RESERVE
from ..errors import CapabilityError, ContextLengthExceeded
from .request import ChatRequest
from .slot import Slot

Check = Callable[[ChatRequest, Slot], Awaitable["str | None"]]


@dataclass
class Candidates:
    allowed: list[str] = field(default_factory=list)  # pyramid order, cheapest first
    excluded: dict[str, str] = field(default_factory=dict)


# why an embedding model is never a chat candidate (it has only the ``embeddings`` capability)
NOT_CHAT = "lacks chat (an embedding model: it serves POST /v1/embeddings only)"


async def is_chat_model(req: ChatRequest, slot: Slot) -> str | None:
    return NOT_CHAT if "embeddings" in slot.capabilities else None


async def has_capabilities(req: ChatRequest, slot: Slot) -> str | None:
    missing = req.needs - slot.capabilities
    return f"lacks {', '.join(sorted(missing))}" if missing else None


def answer_budget(req: ChatRequest) -> int:
    return req.max_tokens or DEFAULT_ANSWER_RESERVE


def _upper_bound(req: ChatRequest) -> int:
    """More tokens than the prompt can have: one per UTF-8 byte plus template overhead."""
    size = 0
    for m in req.messages:
        size += len(message_text(m.get("content")).encode("utf-8", "replace")) + 16
        if m.get("tool_calls"):
            size += len(str(m["tool_calls"]).encode("utf-8", "replace"))
    if req.body.get("tools"):
        size += len(str(req.body["tools"]).encode("utf-8", "replace"))
    return size + 16


async def fits_context(req: ChatRequest, slot: Slot) -> str | None:
    budget = answer_budget(req)
    if _upper_bound(req) + budget <= slot.context_window:
        return None
    tokens = await asyncio.to_thread(slot.backend.count_tokens, req.messages, req.prompt_tools)
    if tokens + budget <= slot.context_window:
        return None
    return f"context window {slot.context_window} < prompt {tokens} + max_tokens {budget}"


async def is_healthy(req: ChatRequest, slot: Slot) -> str | None:
    b = slot.breaker
    if b.available():
        return None
    return f"circuit open ({b.consecutive} failures in a row; next probe in {b.retry_in():.0f}s)"


DEFAULT_CHECKS: tuple[Check, ...] = (is_chat_model, has_capabilities, fits_context, is_healthy)


async def select(req: ChatRequest, slots: Sequence[Slot], checks: Sequence[Check] = DEFAULT_CHECKS) -> Candidates:
    """Run the checks in order (cheap ones first) over every model.

    If the only thing against every model left is an open circuit breaker, they are kept: a
    possibly dead model is better than refusing a request that some model could take.
    """
    out = Candidates()
    unhealthy: list[str] = []
    for slot in slots:
        for check in checks:
            reason = await check(req, slot)
            if reason is not None:
                out.excluded[slot.name] = reason
                if check is is_healthy:
                    unhealthy.append(slot.name)
                break
        else:
            out.allowed.append(slot.name)
    if not out.allowed and unhealthy:
        out.allowed = unhealthy
    return out


def nothing_fits(req: ChatRequest, cands: Candidates, slots: Sequence[Slot]) -> Exception:
    """The error for an empty candidate set: a missing capability first, else the context."""
    lacking = {n: r for n, r in cands.excluded.items() if r.startswith("lacks ") and r != NOT_CHAT}
    if lacking:
        missing = sorted({c for s in slots if s.name in lacking for c in req.needs - s.capabilities})
        models = ", ".join(f"{n} ({r})" for n, r in lacking.items())
        return CapabilityError(
            f"this request needs {', '.join(missing)}, which no model of the pyramid supports: {models}; "
            "declare it in the model's `capabilities:` if the model has it", param=_param(missing))
    biggest = max(s.context_window for s in slots)
    return ContextLengthExceeded(
        f"prompt plus max_tokens={answer_budget(req)} does not fit any model's context window "
        f"(largest: {biggest} tokens)", param="messages")


def _param(missing: list[str]) -> str | None:
    first = missing[0] if missing else None
    return {"tools": "tools", "json_object": "response_format", "json_schema": "response_format",
            "vision": "messages", "audio": "messages", "logprobs": "logprobs", "n": "n"}.get(first or "")
