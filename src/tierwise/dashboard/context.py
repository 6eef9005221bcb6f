"""What the dashboard knows besides the log: the pyramid's tiers and prices (the savings baseline,
the what-if's cost estimates), the router's rule and default knob (marked on the what-if), the
models' circuit breakers (in the gateway only) and whether prompts are logged.

Built from the running engine (``GET /dashboard`` on the gateway) or from a pyramid config
(``tierwise dashboard``, which has no engine and so no breaker state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .whatif import Tier

__all__ = ["Context", "from_engine", "from_pyramid"]


@dataclass
class Context:
    tiers: list[Tier]  # the routed (chat) models, cheapest first
    rule: str = "cost_weight"
    knob: float | None = None  # the default knob (model "tierwise"), when known
    knob_source: str = ""
    breakers: Callable[[], dict[str, Any]] | None = None
    store_prompts: bool | None = None  # None: not known (standalone: prompts show when the log has them)
    mode: str = "gateway"  # or "standalone"

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """``summarize()``'s prices: model -> (input, output) USD per 1M tokens."""
        return {t.name: (t.input_per_1m, t.output_per_1m) for t in self.tiers}

    def breaker_state(self) -> dict[str, Any] | None:
        return None if self.breakers is None else self.breakers()

    def describe(self) -> dict[str, Any]:
        return {"models": [t.__dict__ for t in self.tiers], "rule": self.rule, "knob": self.knob,
                "knob_source": self.knob_source, "store_prompts": self.store_prompts, "mode": self.mode,
                "breakers": self.breakers is not None}


def _number(knob: Any) -> float | None:
    try:
        value = float(knob)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def from_engine(engine: Any) -> Context:
    """The running gateway's pyramid (embedding models stand aside: they are not routed)."""
    router = engine.router
    tiers = [Tier(s.name, s.input_per_1m, s.output_per_1m) for s in engine.slots if "embeddings" not in s.capabilities]
    knob, source = _number(engine.default_knob), "config"
    if knob is None:
        knob, source = _number(getattr(router, "default_knob", None)), "router default"
    return Context(tiers, getattr(router, "rule", "cost_weight"), knob, source if knob is not None else "",
                   breakers=lambda: {s.name: s.breaker.as_dict() for s in engine.slots},
                   store_prompts=bool(getattr(engine, "store_prompts", False)), mode="gateway")


def from_pyramid(pyramid: Any, *, store_prompts: bool | None = None) -> Context:
    """A pyramid config's view, without starting its models. The rule and knob are the router's
    (loaded for them) as the gateway would resolve them; if that fails (no router file, a knob the
    router cannot take), the config's own ``rule:`` and numeric ``knob:``."""
    tiers = [Tier(m.name, m.input_per_1m, m.output_per_1m) for m in pyramid.chat_models]
    rule, knob, source = pyramid.rule, _number(pyramid.knob) if "knob" in pyramid.model_fields_set else None, "config"
    try:
        from ..engine.build import default_knob, load_router

        router = load_router(pyramid)
        resolved, resolved_source = _number(default_knob(pyramid, router)), "config"
        if resolved is None:
            resolved, resolved_source = _number(getattr(router, "default_knob", None)), "router default"
        rule, knob, source = getattr(router, "rule", rule), resolved, resolved_source
    except Exception:  # keep the config's; without a knob the what-if takes the log's latest
        pass
    return Context(tiers, rule, knob, source if knob is not None else "", store_prompts=store_prompts,
                   mode="standalone")
