"""Encoding the engine's results as HTTP: JSON bodies, OpenAI-style errors, ``x-tierwise-*`` headers."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from ..decision import Decision
from ..engine.cascade import chain_header
from ..engine.record import RequestRecord
from ..errors import TierwiseError


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, separators=(",", ":"), ensure_ascii=False), status, headers,
                    media_type="application/json")


def error_response(exc: TierwiseError, headers: dict[str, str] | None = None) -> Response:
    """OpenAI's ``{"error": {...}}`` with the error's status (an upstream rejection: its own body)."""
    return json_response(exc.body(), exc.status, {**exc.headers, **(headers or {})})


def record_headers(rec: RequestRecord | None, decision: Decision | None = None, *,
                   cost_estimated: bool = False) -> dict[str, str]:
    """What every answer says about its routing: request id, model, router, score, cost, fallbacks."""
    if rec is None:
        return {}
    h = {"x-request-id": rec.id, "x-tierwise-router": rec.router, "x-tierwise-cost-usd": f"{rec.cost_usd:.10f}"}
    if rec.model:  # no model answered (a 502, a refusal before any call): no header rather than an empty one
        h["x-tierwise-model"] = rec.model
    if decision is not None and rec.model in decision.scores:
        h["x-tierwise-score"] = f"{decision.scores[rec.model]:.4f}"
        expected = (getattr(decision, "costs", None) or {}).get(rec.model)
        if expected is not None:  # the router's per-request cost prediction, in its training table's units
            h["x-tierwise-expected-cost"] = f"{float(expected):.10g}"
    if rec.guard:
        h["x-tierwise-guard"] = rec.guard
    if rec.fallbacks:
        h["x-tierwise-fallbacks"] = ",".join(f["model"] for f in rec.fallbacks)
    if rec.candidates:
        h["x-tierwise-candidates"] = ",".join(rec.candidates)
    if rec.cascade_chain:
        h["x-tierwise-cascade-chain"] = chain_header(rec.cascade_chain)
    if cost_estimated:
        h["x-tierwise-cost-estimated"] = "prompt-only"
    ticket = getattr(rec, "_ticket", None)  # a key with limits: what is left of them
    if ticket is not None:
        h.update(ticket.headers())
    if rec.budget_used is not None:
        h["x-tierwise-budget-used"] = f"{rec.budget_used:.4f}"
    return h
