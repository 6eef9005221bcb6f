"""Per-key budgets and rate limits inside a request (tierwise.quota does the counting).

Before routing: a key close to its budget gets a cheaper knob (budget-aware routing). After
planning: the request's maximum cost is reserved (every model it may call, at its answer budget)
or it is refused with a 429. When the request is over, whatever the outcome, the reservation is
settled to the actual cost.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

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


async def reserve(quota: Quota | None, rec: RequestRecord, req: ChatRequest, slots: Sequence["Slot"],
                  *, every: bool) -> None:
    """Admit the request against its key's limits (429 if over) and keep the ticket on the record."""
    if quota is None or quota.policy(rec.key_hash) is None:
        return
    tokens = sum(estimate_tokens(str(m.get("content") or "")) for m in req.messages)
    rec._ticket = await quota.admit(rec.key_hash, max_cost(req, slots, every=every), tokens)  # type: ignore[attr-defined]


_settling: set[asyncio.Task] = set()


def settle(quota: Quota | None, rec: RequestRecord) -> None:
    """Swap the reservation for the actual cost (in the background: the answer does not wait)."""
    ticket: Any = getattr(rec, "_ticket", None)
    if quota is None or ticket is None or ticket.settled:
        return
    task = asyncio.ensure_future(quota.settle(ticket, rec.cost_usd, rec.tokens_out))
    _settling.add(task)
    task.add_done_callback(_settling.discard)
