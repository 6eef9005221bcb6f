"""The public router: prompt -> features -> per-model quality -> the cheapest model worth calling.

``Router.fit(table)`` learns from an outcome table, ``Router.score(prompts)`` predicts per-model
quality, ``Router.route(prompt, knob)`` picks a model. The rule trades that quality against each
model's *expected cost of this request* (``routers.cost``: exact input tokens, predicted answer
length). Out-of-sample predictions of the training data are kept as a *calibration curve* (knob ->
traffic share, cost, quality), so a user can ask for a target ("quality=0.95", "share=0.3",
"cost=0.0004") instead of a raw knob, at fit time or per request, without the data; the same curve
fits the *hull guard* (``calibration``): at knobs where the learned rule is not ahead of mixing two
single models, the router serves that mixture. ``save``/``load`` write a versioned, pickle-free
artifact (version 2; version 1 artifacts load with per-model mean costs and no guard).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .calibration import DEFAULT_MARGIN_SE, HullGuard, best_quality_knobs, curve_of_rows, draw
from .decision import RULES, TARGET_HELP, Decision, choose, parse_target
from .prices import estimate_tokens
from .routers import QualityModel, make_quality_model
from .routers.base import QUALITY_MODELS, fit_quality
from .routers.cost import CostModel, cross_val_cost, table_cost_inputs

from . import artifact
from .artifact import ArtifactError, check_output_path  # re-exported: commands and tests import them from here

__all__ = ["Router", "ArtifactError", "check_knob", "check_output_path", "conversation_text", "best_single_model"]


def check_knob(spec: str, rule: str = "cost_weight") -> float | None:
    """Check a knob spec's syntax without a router: a finite number in the rule's range (returned), or a
    target (``decision.parse_target``; None: resolving it needs a calibration curve). ``ValueError`` otherwise.

    ``tierwise train --target`` and ``route --knob`` call it before any work; ``Router.parse_knob`` too."""
    spec = str(spec).strip()
    try:
        value = float(spec)
    except ValueError:
        parse_target(spec)
        return None
    if not math.isfinite(value):
        raise ValueError(f"knob {spec!r} is not a finite number; {TARGET_HELP}")
    if value < 0 or (rule == "threshold" and value > 1.0001):
        raise ValueError(f"knob {spec!r} out of range; {TARGET_HELP}")
    return value


def _content_text(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def conversation_text(messages: Sequence[dict]) -> str:
    """Render a chat for routing: the last user turn first, then earlier turns newest first.

    The encoder caps the tokens it reads, so the request that has to be answered must come first;
    earlier turns still shift the embedding (a follow-up in a code conversation stays 'code').
    """
    turns = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    ordered = [] if last_user is None else [turns[last_user][1]]
    ordered += [text for i, (_, text) in reversed(list(enumerate(turns))) if i != last_user]
    return "\n".join(t for t in ordered if t)


class Router:
    """Encoder + quality model + costs + decision rule, with a calibration curve for targets."""

    def __init__(
        self,
        kind: str = "mf",
        *,
        rule: str = "cost_weight",
        knob: float | str | None = None,
        featurizer=None,
        **params,
    ):
        if kind not in QUALITY_MODELS:
            raise ValueError(f"unknown router kind {kind!r}; choose one of {sorted(QUALITY_MODELS)}")
        if rule not in RULES:
            raise ValueError(f"unknown decision rule {rule!r}; choose one of {RULES}")
        self.kind = kind
        self.rule = rule
        self.params = params
        self._featurizer = featurizer
        self._default_knob_spec = knob
        self.quality: QualityModel | None = None
        self.models: list[str] = []
        self.costs = np.zeros(0)
        self.cost_model: CostModel | None = None
        self.guard: HullGuard | None = None
        self.calibration: dict[str, list[float]] = {}
        self.metadata: dict = {}
        self.default_knob = 0.0 if rule == "cost_weight" else 0.5

    # ------------------------------------------------------------------ naming
    @property
    def name(self) -> str:
        return self.metadata.get("name", self.kind)

    @property
    def featurizer(self):
        if self._featurizer is None:
            from .features import Featurizer

            self._featurizer = Featurizer()
        return self._featurizer

    # ------------------------------------------------------------------ training
    def fit(self, table, *, X: np.ndarray | None = None, holdout: float = 0.2, seed: int = 0,
            oof: np.ndarray | None = None, oof_cost: np.ndarray | None = None, cost_mode: str = "request",
            guard: bool = True, margin_se: float = DEFAULT_MARGIN_SE) -> "Router":
        """Learn from an outcome table (contaminated rows and rows with no outcome are dropped).

        The calibration curve (knob -> cost, quality, traffic share; what targets resolve on) is
        recorded on out-of-sample predictions: ``oof``, cross-validated predictions for every fully
        evaluated row (what ``tierwise train`` passes: every row counts, so small tables calibrate
        stably), or else a ``holdout`` share of those rows. ``oof_cost`` is the matching out-of-fold
        expected cost (computed here by 5-fold cross-fitting when not given). The hull guard is fitted
        on the same points (``guard=False``: none). Then the models are refit on every row. Missing
        cells (e.g. feedback rows) are masked. Pass precomputed features as ``X`` (row-aligned with
        ``table.trainable()``). ``cost_mode="mean"`` decides with each model's mean cost.
        """
        t = table.trainable()
        if len(t) < 20:
            raise ValueError(f"{table.path}: only {len(t)} usable rows; a router needs at least 20")
        self.models = list(t.models)
        self.costs = t.mean_cost()
        X = self.featurizer.transform(t.prompts) if X is None else X
        tin, cost, tout = table_cost_inputs(t)
        groups = np.asarray(t.source)  # each row's source: the models that learn it (``routers.source``) use it
        rng = np.random.default_rng(seed)
        complete = np.isfinite(t.correct).all(axis=1)
        order = rng.permutation(np.flatnonzero(complete))
        n_hold = int(len(t) * holdout)
        pred = dcost = None  # out-of-sample quality and cost for the rows ``hold``, if there are enough rows
        if oof is not None:
            hold = np.flatnonzero(complete)
            if oof.shape != (len(hold), len(self.models)):
                raise ValueError(f"oof predictions have shape {oof.shape}; expected {(len(hold), len(self.models))}")
            pred = np.asarray(oof, dtype=float)
            if oof_cost is None:
                from .evaluate import fold_ids

                dcost = cross_val_cost(X[hold], tin[hold], cost[hold], None if tout is None else tout[hold],
                                       fold_ids(len(hold), 5, seed), cost_mode)
            else:
                dcost = np.asarray(oof_cost, dtype=float)
        elif n_hold >= 10:
            hold = order[:n_hold]
            train = np.setdiff1d(np.arange(len(t)), hold)
            qm = fit_quality(make_quality_model(self.kind, **self.params), X[train], t.correct[train], groups[train])
            pred = qm.predict(X[hold])
            cm = CostModel(cost_mode).fit(X[train], tin[train], cost[train], None if tout is None else tout[train])
            dcost = cm.predict(X[hold], tin[hold])
        if pred is not None:
            self._calibrate_on(pred, dcost, t.correct[hold], cost[hold], guard, margin_se,
                               "cross-validated predictions" if oof is not None else f"{holdout:.0%} holdout")
            # the incumbent ``--add-model`` compares a new model with (``onboarding.recorded_incumbent``) is a
            # property of the data, not of the rows the curve was measured on: on a 20% holdout the best model
            # can be one that was lucky there
            self.calibration["best_single_model"] = self.models[best_single_model(t.correct)]
        self.quality = fit_quality(make_quality_model(self.kind, **self.params), X, t.correct, groups)
        self.cost_model = CostModel(cost_mode).fit(X, tin, cost, tout)
        self.metadata.update(
            {
                "name": self.kind,
                "models": self.models,
                "trained_rows": len(t),
                "training_data": {"path": str(table.path), "fingerprint": t.fingerprint(), "cost_unit": t.cost_unit},
                "features": self.featurizer.describe(),
                "cost_model": self.cost_model.describe(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if self._default_knob_spec is not None:
            self.default_knob = self.parse_knob(str(self._default_knob_spec))
        return self

    def _calibrate_on(self, pred, dcost, correct, cost, guard: bool, margin_se: float, method: str) -> None:
        """The calibration curve and hull guard from out-of-sample predictions of some rows."""
        from .metrics import curve_of_picks, router_picks, single_model_points

        grid = _fine_grid(self.rule)
        picks = router_picks(pred, dcost, self.rule, grid, scale=self.cost_scale)
        raw = curve_of_picks(grid, picks, correct, cost)
        self.guard = (HullGuard.fit(grid, picks, correct, cost, margin_se, best_quality_knobs(self.rule, grid))
                      if guard else None)
        curve = raw if self.guard is None else curve_of_rows(grid, *self.guard.rows(picks, correct, cost))
        singles = single_model_points(correct, cost)
        self.calibration = {
            "knobs": [float(k) for k in grid],
            "cost": curve.cost.tolist(),
            "quality": curve.quality.tolist(),
            "top_share": curve.top_share.tolist(),
            "raw_cost": raw.cost.tolist(),
            "raw_quality": raw.quality.tolist(),
            "best_single_quality": float(singles[:, 1].max()),
            "best_single_model": self.models[int(np.argmax(singles[:, 1]))],
            "top_cost": float(singles[:, 0].max()),
            "rows": len(correct),
            "method": method,
        }
        if self.guard is not None:
            self.calibration["guard"] = self.guard.to_json()
        _parse_knob_cached.cache_clear()

    @property
    def costs(self) -> np.ndarray:
        """Mean cost per model on the training rows: the knob's scale (see ``cost_scale``)."""
        return self._costs

    @costs.setter
    def costs(self, value) -> None:
        self._costs = np.asarray(value, dtype=float)
        self._cost_scale = float(np.max(self._costs)) if len(self._costs) else 1.0  # read per decision

    @property
    def cost_scale(self) -> float:
        """What the ``cost_weight`` knob's cost is relative to: the dearest model's mean cost."""
        return self._cost_scale

    # ------------------------------------------------------------------ inference
    def score(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Predicted quality per model: (m,) for one prompt, (n, m) for a list."""
        self._check_fitted()
        if isinstance(prompts, str):
            return self.quality.predict(self.featurizer.transform_one(prompts))[0]
        return self.quality.predict(self.featurizer.transform(list(prompts)))

    def expected_cost(self, X: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(n, m) expected cost of each request with each model (the per-model mean without a cost model)."""
        if self.cost_model is None:
            return np.broadcast_to(self.costs, (len(texts), len(self.costs)))
        return self.cost_model.predict(X, np.array([estimate_tokens(t) for t in texts], dtype=float))

    def route(self, text: str, knob: float | str | None = None, allowed: Sequence[str] | None = None,
              request_id: str | None = None) -> Decision:
        """Pick a model for one prompt. ``allowed`` restricts the candidates (context fit, health);
        ``request_id`` seeds the hull guard's coin (default: the prompt, so a prompt always goes the same way)."""
        return self.route_many((text,), (knob,), (allowed,), (request_id,))[0]

    def route_many(self, texts: Sequence[str], knobs: Sequence | None = None,
                   allowed: Sequence[Sequence[str] | None] | None = None,
                   request_ids: Sequence[str | None] | None = None) -> list[Decision]:
        """Decisions for many requests at once: row i is what ``route(texts[i], knobs[i], allowed[i],
        request_ids[i])`` decides (``None`` for a whole argument: the default for every row).

        One featurisation, one quality prediction and one cost prediction for all rows: the fixed cost
        of a decision (numpy calls, the models' weights read from memory) is paid once per batch. The
        gateway batches the routed requests that arrive together (``engine.batching``).
        """
        Q, C, ks, picked, notes = self._pick_many(texts, knobs, allowed, request_ids)
        return [Decision.of(self.models, idx, k, note, q, c, self.rule, self.name)
                for idx, k, note, q, c in zip(picked, ks, notes, Q.tolist(), C.tolist())]

    def _pick_many(self, texts: Sequence[str], knobs: Sequence | None, allowed: Sequence | None,
                   request_ids: Sequence | None) -> tuple[np.ndarray, np.ndarray, list[float], list[int], list]:
        """(quality (n, m), expected cost (n, m), knob per row, model index per row, guard note per row)."""
        self._check_fitted()
        n = len(texts)
        if n == 0:
            return np.zeros((0, len(self.models))), np.zeros((0, len(self.models))), [], [], []
        X = self.featurizer.transform_one(texts[0]) if n == 1 else self.featurizer.transform(list(texts))
        Q = self.quality.predict(X)
        C = self.expected_cost(X, texts)
        ks = [self._knob(None if knobs is None else knobs[i]) for i in range(n)]
        masks: dict[tuple | None, np.ndarray | None] = {}
        mkeys = [None] * n
        if allowed is not None:
            for i, names in enumerate(allowed):
                mkey = mkeys[i] = None if names is None else tuple(names)
                if mkey not in masks:
                    masks[mkey] = self._mask(names)
        picked: list = [None] * n
        notes: list = [None] * n
        if self.guard is not None:
            for i in range(n):
                key = request_ids[i] if request_ids is not None and request_ids[i] is not None else texts[i]
                picked[i], notes[i] = self._guarded_pick(ks[i], masks.get(mkeys[i]), key)
        groups: dict[tuple, list[int]] = {}  # (knob, candidate set) -> rows the learned rule decides
        for i in range(n):
            if picked[i] is None:
                groups.setdefault((ks[i], mkeys[i]), []).append(i)
        for (k, mkey), rows in groups.items():
            if len(rows) == n:
                chosen = choose(Q, C, self.rule, k, masks.get(mkey), scale=self.cost_scale)
            else:
                chosen = choose(Q[rows], C[rows], self.rule, k, masks.get(mkey), scale=self.cost_scale)
            for i, idx in zip(rows, chosen.tolist()):
                picked[i] = idx
        return Q, C, ks, picked, notes

    def _mask(self, allowed: Sequence[str] | None) -> np.ndarray | None:
        """The candidates as a mask over ``models`` (None: every model allowed)."""
        if allowed is None:
            return None
        allowed_set = set(allowed)
        if allowed_set.issuperset(self.models):  # every model allowed: no mask to apply
            return None
        mask = np.array([m in allowed_set for m in self.models])
        if not mask.any():
            raise ValueError("no allowed model is known to this router")
        return mask

    def _guarded_pick(self, knob: float, mask: np.ndarray | None, key: str) -> tuple[int | None, str | None]:
        """The hull guard's model at this knob (None: the learned rule decides) and what to log about it."""
        entry = None if self.guard is None else self.guard.entry(knob)
        if entry is None:
            return None, None
        lo, hi, p = entry
        needed = [i for i, w in ((lo, 1 - p), (hi, p)) if w > 0]
        if mask is not None and not mask[needed].all():
            missing = ",".join(self.models[i] for i in needed if not mask[i])
            return None, f"hull-skip: {missing} not allowed"
        u = draw(key)
        idx = hi if u < p else lo
        return idx, f"hull-mix {self.models[lo]}|{self.models[hi]} p={p:.3f} u={u:.3f}"

    def route_batch(self, prompts: Sequence[str], knob: float | str | None = None) -> list[str]:
        """Models for many prompts at one knob (what ``route`` picks for each, with prompt-seeded guard coins)."""
        prompts = list(prompts)
        picked = self._pick_many(prompts, [knob] * len(prompts), None, None)[3]
        return [self.models[i] for i in picked]

    def _knob(self, knob) -> float:
        if knob is None:
            return self.default_knob
        if isinstance(knob, (int, float)):
            return float(knob)
        return self.parse_knob(knob)

    # ------------------------------------------------------------------ knob targets
    def parse_knob(self, spec: str) -> float:
        """A raw knob value, or a target resolved on the calibration curve (see ``TARGET_HELP``)."""
        return _parse_knob_cached(self, str(spec).strip())

    def _resolve_target(self, spec: str) -> float:
        if spec == "":
            return self.default_knob
        value = check_knob(spec, self.rule)
        if value is not None:
            return value
        what, target = parse_target(spec)
        cal = self.calibration
        if not cal:
            raise ValueError("this router has no calibration curve; use a numeric knob")
        knobs = np.array(cal["knobs"])
        cost, quality, share = (np.array(cal[k]) for k in ("cost", "quality", "top_share"))
        if what == "quality":
            ok = quality >= target * cal["best_single_quality"] - 1e-12
            if not ok.any():  # unreachable: the best quality on offer, at its lowest cost
                ok = quality >= quality.max() - 1e-12
            return float(knobs[ok][np.argmin(cost[ok])])
        if what == "share":
            ok = share <= target + 1e-12
        elif what == "cost":
            ok = cost <= target + 1e-15
        else:  # budget
            ok = cost <= target * cal["top_cost"] + 1e-15
        if not ok.any():
            return float(knobs[int(np.argmin(cost))])  # nothing fits: the cheapest operating point
        cand = np.flatnonzero(ok)
        return float(knobs[cand[np.lexsort((cost[cand], -quality[cand]))[0]]])

    def calibrate(self, target: str) -> float:
        """Set the default knob from a target (e.g. ``"share=0.3"``) and return it."""
        self.default_knob = self.parse_knob(target)
        self.metadata["calibrated_target"] = target
        return self.default_knob

    def check_models(self, names: Sequence[str]) -> None:
        """Refuse a pyramid that is not the one this router was trained for."""
        missing = [m for m in self.models if m not in names]
        extra = [m for m in names if m not in self.models]
        if missing or extra:
            raise ValueError(
                f"router {self.name!r} was trained for models {self.models}; the pyramid has {list(names)}"
                + (f" (missing: {missing})" if missing else "")
                + (f" (not in router: {extra})" if extra else "")
            )

    def _check_fitted(self) -> None:
        if self.quality is None:
            raise RuntimeError("router is not fitted: call fit() or Router.load()")

    # ------------------------------------------------------------------ artifacts
    def save(self, path: str | Path) -> Path:
        """A versioned, pickle-free artifact (``artifact.save``)."""
        return artifact.save(self, path)

    @classmethod
    def load(cls, path: str | Path, featurizer=None, *, check_encoder: bool = True) -> "Router":
        """A saved router, checked whole (``artifact.load``: any problem is an ``ArtifactError`` naming the file)."""
        return artifact.load(cls, path, featurizer, check_encoder=check_encoder)

    # ------------------------------------------------------------------ stand-in
    @classmethod
    def stand_in(cls, models: Sequence[str], costs: Sequence[float]) -> "Router":
        """A documented, untrained router for a pyramid with no outcome data yet.

        It uses only prompt length/number counts: longer, number-heavy prompts go up the pyramid.
        Its name says what it is (``stand-in:heuristic``) in every header and log row.
        """
        from .features import SurfaceFeaturizer
        from .routers.baselines import HeuristicQuality

        order = np.argsort(np.asarray(costs, dtype=float), kind="stable")
        obj = cls("heuristic", rule="threshold", featurizer=SurfaceFeaturizer())
        obj.models = [list(models)[i] for i in order]
        obj.costs = np.asarray(costs, dtype=float)[order]
        obj.quality = HeuristicQuality(len(obj.models))
        obj.metadata = {"name": "stand-in:heuristic", "models": obj.models}
        obj.default_knob = 0.5
        return obj

    def __repr__(self) -> str:
        return f"Router(kind={self.kind!r}, rule={self.rule!r}, models={self.models})"


def best_single_model(correct: np.ndarray) -> int:
    """The model with the best mean outcome over the fully graded rows (every row's own, where none is
    fully graded): one comparison, on the same prompts for every model."""
    correct = np.asarray(correct, dtype=float)
    complete = np.isfinite(correct).all(axis=1)
    with np.errstate(invalid="ignore"):
        means = correct[complete].mean(axis=0) if complete.any() else np.nanmean(correct, axis=0)
    return int(np.argmax(np.nan_to_num(means, nan=-np.inf)))


@functools.lru_cache(maxsize=256)
def _parse_knob_cached(router: Router, spec: str) -> float:
    return router._resolve_target(spec)


def _fine_grid(rule: str) -> np.ndarray:
    from .decision import knob_grid

    return knob_grid(rule, 240)
