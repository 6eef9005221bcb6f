"""Synthetic decision-log traffic with known values: the dashboard's tests, its benchmark and its
screenshots fill logs from here (``DecisionLog.record`` for tests, ``to_row`` + ``executemany``
for the 1,000,000-row benchmark).

Each request gets per-model predicted scores, is routed by the real decision rule
(:func:`tierwise.decision.choose` on the request's own token-priced costs, which is what the
dashboard's what-if re-decides with), then answered, failed over, escalated by a cascade or
refused in the proportions of ``Mix``. Deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..decision import choose
from ..engine.record import RequestRecord

__all__ = ["Mix", "Tier", "synthetic_requests", "synthetic_feedback", "DEMO_TIERS"]


@dataclass(frozen=True)
class Tier:
    name: str
    input_per_1m: float
    output_per_1m: float
    latency_ms: float  # typical latency of one answer


DEMO_TIERS = (Tier("small-1b", 0.05, 0.1, 180.0), Tier("mid-8b", 0.3, 0.6, 450.0),
              Tier("large-70b", 2.5, 10.0, 1400.0))


@dataclass(frozen=True)
class Mix:
    """Shares of the kinds of request (the rest are routed and answered by the chosen model)."""

    errors: float = 0.02  # refused or failed: 4xx/5xx, no model answered
    fallbacks: float = 0.04  # the chosen model failed and the next one answered
    cascade: float = 0.05  # model "tierwise:cascade": no router scores, a chain of models
    direct: float = 0.04  # a pyramid model named directly: not routed
    embeddings: float = 0.02  # POST /v1/embeddings: forwarded to one model
    thin: float = 0.1  # requests whose two best scores are within 0.02 (a thin margin)


def synthetic_requests(n: int, tiers: Sequence[Tier], *, start: float, end: float, knob: float = 0.4,
                       rule: str = "cost_weight", keys: Sequence[str | None] = (None,), seed: int = 0,
                       mix: Mix = Mix(), prompts: bool = False) -> Iterator[RequestRecord]:
    """``n`` requests spread uniformly over ``[start, end)`` (in time order), by ``keys`` (hashes)."""
    rng = np.random.default_rng(seed)
    m = len(tiers)
    pin = np.array([t.input_per_1m for t in tiers])
    pout = np.array([t.output_per_1m for t in tiers])
    ts = np.sort(rng.uniform(start, end, n))
    tin = rng.integers(20, 1500, n)
    tout = rng.integers(5, 600, n)
    hard = rng.beta(2, 2, n)  # per-request difficulty: bigger models help more on hard prompts
    gain = np.linspace(0.0, 1.0, m)[None, :]
    q = np.clip(0.95 - hard[:, None] * (0.8 - 0.5 * gain) + rng.normal(0, 0.04, (n, m)), 0.01, 0.99)
    thin = rng.random(n) < mix.thin
    q[thin, -1] = np.clip(q[thin, -2] + rng.uniform(-0.02, 0.02, thin.sum()), 0.01, 0.99)
    q = np.round(q, 4)
    cost = (tin[:, None] * pin + tout[:, None] * pout) / 1e6
    norm = cost / np.where(cost.max(axis=1, keepdims=True) > 0, cost.max(axis=1, keepdims=True), 1.0)
    picks = choose(q, norm, rule, knob)
    kind = rng.choice(6, n, p=_kind_p(mix))
    key_idx = rng.integers(0, len(keys), n)
    jitter = rng.lognormal(0, 0.35, n)
    for i in range(n):
        yield _request(i, float(ts[i]), kind[i], tiers, q[i], int(picks[i]), int(tin[i]), int(tout[i]),
                       float(jitter[i]), keys[key_idx[i]], knob, rule, rng, prompts)


def synthetic_feedback(records: Sequence[RequestRecord], share: float = 0.1, seed: int = 1) -> list[tuple[str, float]]:
    """Ratings for a ``share`` of the answered requests: 1.0 with the answering model's predicted
    probability (slightly over-confident, so the calibration plot has something to show), else 0.0."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        if r.status != 200 or not r.model or r.model not in r.scores or rng.random() >= share:
            continue
        p = 0.85 * r.scores[r.model] + 0.05
        out.append((r.id, 1.0 if rng.random() < p else 0.0))
    return out


_KINDS = ("routed", "error", "fallback", "cascade", "direct", "embeddings")


def _kind_p(mix: Mix) -> list[float]:
    rest = 1.0 - (mix.errors + mix.fallbacks + mix.cascade + mix.direct + mix.embeddings)
    if rest < 0:
        raise ValueError("Mix shares add up to more than 1")
    return [rest, mix.errors, mix.fallbacks, mix.cascade, mix.direct, mix.embeddings]


def _request(i: int, ts: float, kind_i: int, tiers: Sequence[Tier], q: np.ndarray, pick: int, tin: int,
             tout: int, jitter: float, key: str | None, knob: float, rule: str, rng: np.random.Generator,
             prompts: bool) -> RequestRecord:
    kind = _KINDS[kind_i]
    names = [t.name for t in tiers]
    rec = RequestRecord(id=f"req-{i:07d}", ts=ts, prompt_hash=f"{i * 2654435761 % 2**32:08x}", status=200,
                        requested_model="tierwise", router="synthetic",
                        rule=rule, knob=knob, tokens_in=tin, tokens_out=tout, key_hash=key,
                        route_ms=round(0.3 + 0.4 * jitter, 4), stream=bool(i % 3 == 0), candidates=list(names))
    rec.scores = {n: float(v) for n, v in zip(names, q)}
    rec.chosen = rec.model = names[pick]
    if prompts:
        rec.prompt = f"Synthetic prompt #{i}: explain item {i % 97} in {20 + i % 50} words."
    if kind == "error":
        status = (502, 429, 400, 503)[i % 4]
        rec.model, rec.tokens_out, rec.status = None, 0, status
        rec.error = {502: "all models failed", 429: "rate limited", 400: "bad request", 503: "overloaded"}[status]
    elif kind == "fallback" and pick + 1 < len(tiers):
        rec.add_fallback(names[pick], "timeout" if i % 2 else "error", "synthetic upstream failure", "upstream error")
        rec.model = names[pick + 1]
    elif kind == "cascade":
        rec.requested_model, rec.router, rec.scores, rec.chosen, rec.knob = "tierwise:cascade", "cascade", {}, None, None
        steps = 1 + int(rng.integers(0, len(tiers)))
        chain = [{"model": names[s], "confidence": round(float(rng.uniform(0.3, 0.95)), 4),
                  "outcome": "kept" if s == steps - 1 else "escalated", "tokens_in": tin,
                  "tokens_out": tout if s == steps - 1 else max(1, tout // 2), "cost_usd": 0.0} for s in range(steps)]
        for step, t in zip(chain, tiers):
            step["cost_usd"] = (step["tokens_in"] * t.input_per_1m + step["tokens_out"] * t.output_per_1m) / 1e6
        rec.cascade_chain, rec.model = chain, names[steps - 1]
        rec.tokens_in = sum(s["tokens_in"] for s in chain)
        rec.tokens_out = sum(s["tokens_out"] for s in chain)
    elif kind == "direct":
        rec.requested_model, rec.router, rec.scores, rec.knob = names[i % len(names)], "", {}, None
        rec.chosen = rec.model = names[i % len(names)]
    elif kind == "embeddings":
        rec.surface, rec.requested_model, rec.router, rec.scores, rec.knob = "embeddings", names[0], "", {}, None
        rec.chosen = rec.model = names[0]
        rec.tokens_out = 0
    else:
        rec.surface = ("chat", "chat", "chat", "responses", "messages")[i % 5]
    if rec.model is not None:
        t = tiers[names.index(rec.model)]
        rec.latency_ms = round(t.latency_ms * jitter * (1.6 if rec.fallbacks else 1.0), 3)
        if rec.cascade_chain:
            rec.cost_usd = math.fsum(s["cost_usd"] for s in rec.cascade_chain)
        else:
            rec.cost_usd = (rec.tokens_in * t.input_per_1m + rec.tokens_out * t.output_per_1m) / 1e6
    else:
        rec.latency_ms = round(5.0 * jitter, 3)
    return rec
