"""The typed record of one request: everything the decision log, metrics and headers read.

The engine fills it as the request runs (plan, candidates, every model called, tokens, cost) and
hands it to its listeners once, when the request is over: the decision log, Prometheus metrics,
or anything a Python user registers.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from ..hashing import prompt_hash

__all__ = ["RequestRecord", "CascadeStep", "Fallback", "new_request_id", "prompt_hash", "to_row", "from_row"]


def new_request_id(prefix: str = "chatcmpl") -> str:
    """128 bits from the OS's CSPRNG: ids cannot be predicted from earlier ones (~3 us)."""
    return f"{prefix}-{secrets.token_hex(16)}"




@dataclass
class Fallback:
    """A model that was tried and failed (or was passed over), and why.

    ``error`` is the full detail, for the log only; ``public`` is what a client may be told
    (no backend address, no upstream body).
    """

    model: str
    reason: str  # error | timeout | overloaded | context
    error: str
    public: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "reason": self.reason, "error": self.error,
                "public": self.public or self.reason}


@dataclass
class CascadeStep:
    """One model the cascade called: its confidence and whether its answer was kept."""

    model: str
    confidence: float | None
    outcome: str  # kept | escalated | error
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass
class RequestRecord:
    """One request. ``chosen`` is the plan's pick, ``model`` the one that answered."""

    id: str
    ts: float
    prompt_hash: str = ""
    status: int = 0
    requested_model: str = ""
    router: str = ""
    rule: str = ""
    knob: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    chosen: str | None = None
    model: str | None = None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    route_ms: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None
    stream: bool = False
    prompt: str | None = None
    # cascade requests only: [{model, confidence, outcome, tokens_in, tokens_out, cost_usd}, ...]
    cascade_chain: list[dict[str, Any]] | None = None
    # the models the plan chose among (after capability / context checks) and why others were not
    candidates: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)  # capabilities the request needs
    upstream_id: str | None = None  # the answering backend's own response id
    usage_estimated: bool = False
    surface: str = "chat"  # which API the client called
    key_hash: str | None = None  # which client key made the request (a hash, never the key)
    budget_used: float | None = None  # the key's budget fraction used when routed (budget-aware knob)
    guard: str | None = None  # the router's hull guard: how it decided at this knob (None: unguarded)

    def add_fallback(self, model: str, reason: str, error: str, public: str = "") -> None:
        self.fallbacks.append(Fallback(model, reason, error[:300], public).as_dict())

    def set_cascade(self, steps: list[CascadeStep]) -> None:
        self.cascade_chain = [
            {"model": s.model, "confidence": None if s.confidence is None else round(float(s.confidence), 6),
             "outcome": s.outcome, "tokens_in": int(s.tokens_in), "tokens_out": int(s.tokens_out),
             "cost_usd": float(s.cost_usd)} for s in steps]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = (
    "id", "ts", "prompt_hash", "prompt", "requested_model", "router", "rule", "knob", "scores",
    "chosen", "model", "fallbacks", "tokens_in", "tokens_out", "latency_ms", "route_ms",
    "cost_usd", "status", "error", "stream", "cascade_chain", "candidates", "excluded", "needs",
    "upstream_id", "usage_estimated", "surface", "key_hash", "budget_used", "guard",
)
JSON_COLUMNS = ("scores", "fallbacks", "cascade_chain", "candidates", "excluded", "needs")
BOOL_COLUMNS = ("stream", "usage_estimated")


_KIND = tuple((c, 1 if c in JSON_COLUMNS else 2 if c in BOOL_COLUMNS else 0) for c in COLUMNS)
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def to_row(rec: RequestRecord) -> tuple:
    """The record as a database row, in ``COLUMNS`` order (JSON text for the structured fields).

    Written by the log's writer thread for every request, so it stays cheap (no ``asdict`` deep copy).
    """
    out = []
    for name, kind in _KIND:
        v = getattr(rec, name)
        if kind == 1:
            v = None if v is None else ("[]" if v == [] else "{}" if v == {} else _dumps(v))
        elif kind == 2:
            v = int(bool(v))
        elif name == "knob" and v is not None and v == float("inf"):
            v = 1e308  # JSON/SQL have no infinity; "always cheapest"
        out.append(v)
    return tuple(out)


def from_row(row: Any) -> dict[str, Any]:
    d = dict(zip(COLUMNS, row))
    for c in JSON_COLUMNS:
        v = d.get(c)
        d[c] = json.loads(v) if v else ({} if c in ("scores", "excluded") else None if c == "cascade_chain" else [])
    for c in BOOL_COLUMNS:
        d[c] = bool(d.get(c))
    d["surface"] = d.get("surface") or "chat"
    return d
