"""A new model in an existing router, from a few probe outcomes (``tierwise train --add-model``).

Models appear weekly; re-collecting a full outcome table for each is what users cannot afford. Here
the router stays as trained and the new model is *placed* relative to the models it knows
(``routers.probe``): run the new model on K prompts picked by :func:`select` (``tierwise probe
select``), grade them, and :func:`add_model` fits its coefficients and its cost. The calibration
curve and the hull guard were measured without the new model: the guard is dropped (its hull did not
know the model) and the curve is kept, marked stale, until the router is retrained on a full table.

One part of the guard is rebuilt from the probes (:func:`best_quality_rule`): where the knob asks for
the best quality whatever the cost, a new model that did better on the probes than the best model the
router knows is served alone, as the guard serves the best single model there. The placement alone
would not do it: it competes, prompt by prompt, against the known models' predictions, which were
learned from thousands of outcomes each and vary far more between prompts (bench/probe_onboarding.py,
with and without ``--no-best-rule``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .calibration import HullGuard, best_quality_knobs
from .routers.probe import ProbedQuality, logits, place_posterior, select_probes

BEST_MARGIN_SE = 0.0  # a new model takes the best-quality knob when it beat the incumbent on the probes by this many SEs


def base_quality(router) -> np.ndarray:
    """The router's predicted quality of the models it was *trained* on, for feature rows ``X``."""
    q = router.quality
    return q.base_predict if isinstance(q, ProbedQuality) else q.predict


def select(router, prompts: Sequence[str], k: int) -> np.ndarray:
    """Indices of the ``k`` prompts whose outcomes place a new model best, most informative first."""
    router._check_fitted()
    X = router.featurizer.transform(list(prompts))
    return select_probes(base_quality(router)(X), k)


def add_model(router, table, name: str) -> dict:
    """Place ``name`` (a model with ``correct|name`` outcomes in ``table``) into ``router``, in place.

    Its cost comes from the same table (``cost|name``, tokens, or a price book, as ``load_table``
    resolved it), fitted as input price x exact input tokens + its mean output cost. Returns a summary.
    """
    from scipy.optimize import nnls

    router._check_fitted()
    if name in router.models:
        raise ValueError(f"router already has a model {name!r}")
    if name not in table.models:
        raise ValueError(f"{table.path}: no 'correct|{name}' column (models: {table.models})")
    col = table.models.index(name)
    ok = np.isfinite(table.correct[:, col]) & ~table.contaminated
    if ok.sum() < 5:
        raise ValueError(f"{table.path}: only {int(ok.sum())} graded probes of {name!r}; place a model from 10 or more")
    probes = table.rows(ok)
    X = router.featurizer.transform(probes.prompts)
    best = best_quality_rule(router, probes, name, X)
    w, b, cov = place_posterior(logits(base_quality(router)(X)), probes.correct[:, col])
    router.quality = ProbedQuality.extend(router.quality, w, b, cov)
    tin, cost = probes.prompt_tokens(), probes.cost[:, col]
    A = np.column_stack([tin, np.ones(len(tin))])
    scale = A.max(axis=0)
    (a, c) = nnls(A / scale, cost)[0] / scale if cost.std() > 1e-12 * abs(cost.mean()) else (0.0, cost.mean())
    router.cost_model.add_model(float(a), float(c), float(cost.mean()))
    router.models.append(name)
    router.costs = np.append(router.costs, cost.mean())
    router.kind = "probed"
    router.guard = None
    router.calibration.pop("guard", None)
    if best["serves_new"]:
        router.calibration["best_model"] = name
    served = router.calibration.get("best_model")  # set by this or an earlier --add-model
    if served in router.models and router.calibration.get("knobs"):
        knobs = np.asarray(router.calibration["knobs"], dtype=float)
        at_best = best_quality_knobs(router.rule, knobs)
        lo = np.where(at_best, router.models.index(served), -1)
        router.guard = HullGuard(knobs, lo, lo.copy(), at_best.astype(float))
        router.calibration["guard"] = router.guard.to_json()
    if router.calibration:
        router.calibration["stale"] = f"measured before {name} was added from {len(probes)} probes"
    summary = {"model": name, "probes": len(probes), "probe_quality": float(probes.correct[:, col].mean()),
               "mean_cost": float(cost.mean()), "cost_unit": probes.cost_unit, "table": str(table.path),
               "best_quality_knob": best}
    trained_unit = router.metadata.get("training_data", {}).get("cost_unit")
    if trained_unit and trained_unit != probes.cost_unit:
        summary["warning"] = (f"the probe table's cost is in {probes.cost_unit!r} but the router's in {trained_unit!r}: "
                              "give the new model's price in the same unit (--prices)")
    router.metadata.setdefault("added_models", []).append(summary)
    router.metadata["models"] = router.models
    base_name = router.metadata.get("name", "router").split("+")[0]
    router.metadata["name"] = f"{base_name}+probed"
    return summary


def recorded_incumbent(router) -> str | None:
    """The best model the router knows, as recorded: by an earlier ``--add-model`` that gave a new model the
    best-quality knob, else at training (None for artifacts from before it was recorded)."""
    name = router.calibration.get("best_model") or router.calibration.get("best_single_model")
    return name if name in router.models else None


def beats_incumbent(y_new: np.ndarray, y_incumbent: np.ndarray, z: float = BEST_MARGIN_SE) -> bool:
    """Whether a new model's outcomes on the probes beat the incumbent best model's on the same probes by
    more than ``z`` paired standard errors (both (k,), graded in [0, 1])."""
    diff = np.asarray(y_new, dtype=float) - np.asarray(y_incumbent, dtype=float)
    if not len(diff):
        return False
    return bool(diff.mean() > z * diff.std() / np.sqrt(len(diff)))


def best_quality_rule(router, probes, name: str, X: np.ndarray) -> dict:
    """Whether ``name`` is to be served alone at the best-quality knob: on the probes it beat the best model
    the router knows (the incumbent; :func:`beats_incumbent`). Paired on the same prompts, so it needs the
    incumbent graded in the probe table too (``correct|<incumbent>``); without that the rule is not applied."""
    incumbent = recorded_incumbent(router)
    if incumbent is None:  # artifacts from before the name was kept: the best predicted on the probes
        incumbent = router.models[int(np.argmax(router.quality.predict(X).mean(axis=0)))]
    out = {"incumbent": incumbent, "serves_new": False}
    if incumbent not in probes.models:
        out["why_not"] = (f"the probe table does not grade the incumbent: add correct|{incumbent} on the same prompts "
                          "to let the new model take the best-quality knob")
        return out
    y = probes.correct[:, probes.models.index(name)]
    ref = probes.correct[:, probes.models.index(incumbent)]
    both = np.isfinite(ref)
    out.update(probes=int(both.sum()), new_quality=float(y[both].mean()) if both.any() else None,
               incumbent_quality=float(ref[both].mean()) if both.any() else None,
               serves_new=beats_incumbent(y[both], ref[both]))
    return out
