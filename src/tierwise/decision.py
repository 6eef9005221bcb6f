"""Decision rules: turn predicted per-model quality into one model choice.

Two rules, both monotone in one knob so a single number trades cost for quality:

* ``cost_weight`` (lambda >= 0): argmax_m  q_m - lambda * cost_m / max(cost). lambda=0 is "best
  predicted quality", large lambda is "cheapest model".
* ``threshold`` (tau in [0, 1]): the cheapest model whose predicted quality clears tau; if none
  does, the one with the highest predicted quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RULES = ("cost_weight", "threshold")

TARGET_HELP = (
    "a knob is a number (cost weight, or quality threshold for the 'threshold' rule) or a target: "
    "'quality=0.95' (95% of the best model's quality at least cost), 'share=0.3' (at most 30% of "
    "traffic to the most expensive model), 'cost=0.0004' (mean cost per request at most this), "
    "'budget=0.5' (mean cost at most 50% of the most expensive model's)"
)
# accepted spellings of a target -> its canonical name
TARGET_KINDS = {"quality": "quality", "q": "quality", "share": "share", "top": "share", "top_share": "share",
                "cost": "cost", "budget": "budget"}


def parse_target(spec: str) -> tuple[str, float]:
    """``'quality=0.95'`` -> ``('quality', 0.95)``: the canonical target name and its value.

    Only the syntax is checked here (the config validates it at load time); resolving a target
    to a knob needs a trained router's calibration curve (``Router.parse_knob``).
    """
    what, sep, raw = str(spec).partition("=")
    if not sep:
        raise ValueError(f"cannot read knob {spec!r}; {TARGET_HELP}")
    kind = TARGET_KINDS.get(what.strip().lower())
    if kind is None:
        raise ValueError(f"unknown target {what.strip()!r}; {TARGET_HELP}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"target {spec!r} needs a number after '='; {TARGET_HELP}") from None
    lo, hi, closed_lo = _TARGET_RANGES[kind]
    if not math.isfinite(value) or value > hi or value < lo or (value == lo and not closed_lo):
        bound = f"{'[' if closed_lo else '('}{lo:g}, {hi:g}]"
        raise ValueError(f"target {spec!r}: {kind} must be in {bound}; {TARGET_HELP}")
    return kind, value


# (low, high, low included) per target: quality is a fraction of the best single model's (a router can beat
# it, so up to 1.5), budget of the most expensive model's cost
_TARGET_RANGES = {"quality": (0.0, 1.5, False), "share": (0.0, 1.0, True), "cost": (0.0, math.inf, False),
                  "budget": (0.0, 1.0, False)}


@dataclass
class Decision:
    """Why a request went where it went (logged by the gateway, returned in headers)."""

    model: str
    index: int
    scores: dict[str, float]
    rule: str
    knob: float
    router: str
    utilities: dict[str, float] = field(default_factory=dict)
    # predicted cost of this request per model (the router's units; empty for routers without a cost model)
    costs: dict[str, float] = field(default_factory=dict)
    # the hull guard (``tierwise.calibration``): ``mixed`` is True when this knob is one where the learned
    # rule is no better than mixing two single models, so the request went to one of them at random (seeded
    # by the request id or prompt hash); ``guard`` says which mixture ("hull-mix a|b p=0.37 u=0.12") or why
    # it was not applied ("hull-skip: ..."); None when the learned rule decided unguarded.
    mixed: bool = False
    guard: str | None = None

    @property
    def score(self) -> float:
        return self.scores[self.model]

    @classmethod
    def of(cls, models: list[str], index: int, knob: float, guard: str | None, scores, costs, rule: str,
           router: str) -> "Decision":
        """A router's pick: model ``index`` of ``models``, with every model's score and expected cost."""
        return cls(model=models[index], index=index, scores=dict(zip(models, scores)), rule=rule, knob=knob,
                   router=router, costs=dict(zip(models, costs)),
                   mixed=guard is not None and guard.startswith("hull-mix"), guard=guard)


def cost_scale(cost: np.ndarray) -> float:
    """The cost the ``cost_weight`` knob is relative to: the dearest model's mean cost.

    Fixed per router (``Router.cost_scale``), so a per-request cost matrix gives the same decision for a
    row alone as in a batch.
    """
    cost = np.atleast_2d(np.asarray(cost, dtype=float))
    return float(np.max(cost.mean(axis=0))) or 1.0


def choose(quality: np.ndarray, cost: np.ndarray, rule: str, knob: float, allowed: np.ndarray | None = None,
           scale: float | None = None) -> np.ndarray:
    """Model index per row. ``quality``: (n, m); ``cost``: (m,) or (n, m) (per model, or per request and
    model); ``allowed``: (m,) bool mask; ``scale``: see :func:`cost_scale` (default: from ``cost``)."""
    quality = np.atleast_2d(np.asarray(quality, dtype=float))
    cost = np.asarray(cost, dtype=float)
    if cost.ndim == 1:  # one cost per model: broadcast against every row by the arithmetic below
        cost = cost[None, :]
    mask = None if allowed is None else np.broadcast_to(np.asarray(allowed, bool), quality.shape)
    if rule == "cost_weight":
        scale = float(scale) if scale else cost_scale(cost)
        if np.isinf(knob):  # "always cheapest": inf * cost would make every utility -inf
            util = np.broadcast_to(-cost / scale, quality.shape)
        else:
            util = quality - float(knob) * cost / scale
        if mask is not None:
            util = np.where(mask, util, -np.inf)
        # ties: the cheaper model wins (stable order is by cost in a pyramid)
        util = util - 1e-12 * cost / scale
        return np.argmax(util, axis=1)
    if rule == "threshold":
        ok = quality >= float(knob)
        if mask is not None:
            ok &= mask
        masked_cost = np.where(ok, cost, np.inf)
        cheapest = np.argmin(masked_cost, axis=1)
        q = quality if mask is None else np.where(mask, quality, -np.inf)
        best = np.argmax(q, axis=1)
        return np.where(ok.any(axis=1), cheapest, best)
    raise ValueError(f"unknown decision rule {rule!r}; choose one of {RULES}")


def knob_grid(rule: str, n: int = 48) -> np.ndarray:
    """Knob values that sweep a rule from 'always best' to 'always cheapest' (for curves/calibration)."""
    if rule == "cost_weight":
        return np.concatenate([[0.0], np.geomspace(1e-4, 1e3, n - 2), [np.inf]])
    if rule == "threshold":
        return np.linspace(1.0001, 0.0, n)
    raise ValueError(f"unknown decision rule {rule!r}; choose one of {RULES}")
