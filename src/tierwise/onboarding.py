"""A new model in an existing router, from a few probe outcomes (``tierwise train --add-model``).

Models appear weekly; re-collecting a full outcome table for each is what users cannot afford. Here
the router stays as trained and the new model is *placed* relative to the models it knows
(``routers.probe``): run the new model on K prompts picked by :func:`select` (``tierwise probe
select``), grade them, and :func:`add_model` fits its coefficients and its cost. The calibration
curve and the hull guard were measured without the new model: the guard is dropped (its hull did not
know the model) and the curve is kept, marked stale, until the router is retrained on a full table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .routers.probe import ProbedQuality, logits, place_posterior, select_probes


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
    if router.calibration:
        router.calibration["stale"] = f"measured before {name} was added from {len(probes)} probes"
    summary = {"model": name, "probes": len(probes), "probe_quality": float(probes.correct[:, col].mean()),
               "mean_cost": float(cost.mean()), "cost_unit": probes.cost_unit, "table": str(table.path)}
    trained_unit = router.metadata.get("training_data", {}).get("cost_unit")
    if trained_unit and trained_unit != probes.cost_unit:
        summary["warning"] = (f"the probe table's cost is in {probes.cost_unit!r} but the router's in {trained_unit!r}: "
                              "give the new model's price in the same unit (--prices)")
    router.metadata.setdefault("added_models", []).append(summary)
    router.metadata["models"] = router.models
    base_name = router.metadata.get("name", "router").split("+")[0]
    router.metadata["name"] = f"{base_name}+probed"
    return summary
