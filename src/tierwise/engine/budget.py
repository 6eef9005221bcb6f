"""Per-key budgets and rate limits inside a request (tierwise.quota does the counting).

Before routing: a key close to its budget gets a cheaper knob (budget-aware routing). After
planning: the request's maximum cost is reserved (every model it may call, at its answer budget)
or it is refused with a 429. When the request is over, whatever the outcome, the reservation is
settled to the actual cost.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Sequence

from ..backends.base import message_text
from ..prices import estimate_tokens
from ..quota import Quota, cheaper_knob
from .candidates import _upper_bound
from .record import RequestRecord
from .request import ChatRequest

if TYPE_CHECKING:
    from .slot import Slot


async def routed_knob(quota: Quota | None, rec: RequestRecord, rule: str, knob: float) -> float:
    """The knob to route with for this key: unchanged unless its budget is nearly spent."""
    if quota is None:
        return knob
    policy = quota.policy(rec.key_hash)
    if policy is None:
        return knob
    used = await quota.used(rec.key_hash)
    if used is None:
        return knob
    rec.budget_used = round(float(used), 6)
    return cheaper_knob(rule, float(knob), used, policy.degrade_from)


def max_cost(req: ChatRequest, slots: Sequence["Slot"], *, every: bool) -> float:
    """What the request can cost at most: its most expensive model (``every``: all of them, as a
    cascade may call each) with the prompt's byte count as tokens and the full answer budget."""
    t_in = _upper_bound(req)
    costs = [s.cost(t_in, req.max_tokens or max(1, s.context_window - t_in)) for s in slots]
    return (sum(costs) if every else max(costs)) if costs else 0.0


def _json_tokens(value: Any) -> int:
    return estimate_tokens(json.dumps(value, ensure_ascii=False, default=str)) if value else 0


def prompt_tokens(req: Any) -> int:
    """What the request's prompt carries, as a key's tokens per minute counts it at admission (the
    backends' own estimate: ~4 characters a token): every message's text, the tool calls in its
    messages, and the tool or function definitions the prompt is given. Settlement replaces it by
    the prompt tokens the model reported."""
    n = 2
    for m in req.messages:
        n += estimate_tokens(message_text(m.get("content"))) + 4
        if m.get("tool_calls"):
            n += _json_tokens(m["tool_calls"])
        if m.get("function_call"):
            n += _json_tokens(m["function_call"])
    tools = getattr(req, "prompt_tools", None)
    n += _json_tokens(tools)
    body = getattr(req, "body", None) or {}
    if isinstance(body, dict) and body.get("functions") and body.get("function_call") != "none":
        n += _json_tokens(body["functions"])  # the legacy spelling of tools
    return n


async def reserve(quota: Quota | None, rec: RequestRecord, req: ChatRequest, slots: Sequence["Slot"],
                  *, every: bool) -> None:
    """Admit the request against its key's limits (429 if over; 400 if it can never fit its tokens per
    minute; 503 if the limits cannot be checked) and keep the ticket on the record."""
    if quota is None or quota.policy(rec.key_hash) is None:
        return
    rec._ticket = await quota.admit(rec.key_hash, max_cost(req, slots, every=every),  # type: ignore[attr-defined]
                                    prompt_tokens(req))


_settling: set[asyncio.Task] = set()


def settle(quota: Quota | None, rec: RequestRecord) -> None:
    """Swap the reservation for the actual cost and tokens, prompt and completion (in the background:
    the answer does not wait)."""
    ticket: Any = getattr(rec, "_ticket", None)
    if quota is None or ticket is None or ticket.settled:
        return
    task = asyncio.ensure_future(quota.settle(ticket, rec.cost_usd, rec.tokens_out, tokens_in=rec.tokens_in))
    _settling.add(task)
    task.add_done_callback(_settling.discard)
