"""The plan for one request: which model answers first and which ones follow if it fails.

The ``model`` field says how to plan:

* ``tierwise`` / ``tierwise:<knob>``: *routed*: the router ranks the candidates and picks one.
* ``tierwise:cascade``: *cascade*: cheapest first, escalating while unsure (engine/cascade.py).
  Plain ``tierwise`` plans a cascade too when the engine was built with ``cascade_default``.
* a pyramid model's own name: *direct*: that model, no routing.

The fallback chain after the first model: the candidates above it cheapest first, then the ones
below it (a failing model is replaced by the next better one before a cheaper one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ..decision import Decision
from ..errors import CapabilityError, ModelNotFound, RequestError
from .batching import Routed
from .candidates import Candidates

ROUTED = "tierwise"
CASCADE = "tierwise:cascade"

Kind = Literal["routed", "cascade", "direct"]


@dataclass
class Plan:
    kind: Kind
    chain: list[str] = field(default_factory=list)
    knob: Any = None
    decision: Decision | None = None
    router_error: str | None = None  # the router failed; the chain starts at the most capable model
    route_ms: float = 0.0


def kind_of(model: str, names: Sequence[str], *, cascade: bool, cascade_default: bool) -> tuple[Kind, str | None]:
    """(plan kind, knob spec) for a ``model`` field; unknown names are a 404 listing the valid ones."""
    if model == CASCADE:
        if not cascade:
            raise RequestError(
                f"model '{CASCADE}' needs calibrated cascade thresholds: run `tierwise cascade calibrate TABLE "
                "--target quality=0.95 --out cascade.json`, then set `cascade: cascade.json` in the pyramid YAML "
                "or start `tierwise serve --cascade cascade.json`", param="model", code="cascade_not_configured")
        return "cascade", None
    if model == ROUTED:
        return ("cascade" if cascade_default else "routed"), None
    if model.startswith(ROUTED + ":"):
        return "routed", model[len(ROUTED) + 1:]
    if model in names:
        return "direct", None
    valid = ", ".join([ROUTED, f"{ROUTED}:<knob>", *([CASCADE] if cascade else []), *names])
    raise ModelNotFound(f"model '{model}' does not exist; use one of: {valid}", param="model")


def fallback_chain(first: str, order: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """``first``, then the allowed models above it cheapest first, then those below it."""
    i = list(order).index(first)
    ok = set(allowed)
    up = [m for m in order[i + 1:] if m in ok]
    down = [m for m in reversed(order[:i]) if m in ok]
    return [first, *up, *down]


def routed(routed: Routed, cands: Candidates, order: Sequence[str], knob: Any = None) -> Plan:
    """The plan for the router's decision (``engine.batching``); a broken router answers with the most
    capable candidate."""
    plan = Plan("routed", knob=knob, route_ms=routed.route_ms)
    if routed.decision is None:
        plan.router_error = routed.error
        plan.chain = fallback_chain(cands.allowed[-1], order, cands.allowed)
        return plan
    plan.decision = decision = routed.decision
    first = decision.model if decision.model in cands.allowed else cands.allowed[0]
    plan.chain = fallback_chain(first, order, cands.allowed)
    return plan


def direct(name: str, cands: Candidates, order: Sequence[str]) -> tuple[Plan, str | None]:
    """The named model; if its context window cannot hold the request, the next one up that can.

    Returns the plan and, when the named model was passed over, why.
    """
    if name in cands.allowed:
        return Plan("direct", chain=fallback_chain(name, order, cands.allowed)), None
    reason = cands.excluded.get(name, "")
    if reason.startswith("lacks "):  # asked by name: another model would not be what the client chose
        raise CapabilityError(f"model '{name}' {reason.replace('lacks', 'does not support', 1)}, which this "
                              "request needs; route with model 'tierwise' or declare it in the model's "
                              "`capabilities:`", param="model")
    first = next(n for n in fallback_chain(name, order, order) if n in cands.allowed)
    return Plan("direct", chain=fallback_chain(first, order, cands.allowed)), cands.excluded.get(name)


def parse_knob(router: Any, spec: str | None, default: Any, requested: str) -> Any:
    if spec is None:
        return default
    try:
        knob = router.parse_knob(spec)
    except ValueError as exc:
        raise RequestError(f"bad knob in model '{requested}': {exc}", param="model", code="invalid_knob") from None
    if knob != knob:  # NaN
        raise RequestError(f"bad knob in model '{requested}': not a number", param="model", code="invalid_knob")
    return knob
