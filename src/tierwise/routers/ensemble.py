"""The default learned router: an average of complementary views of a prompt.

Measured on the shipped tables (see ``bench/router_quality.py``): neighbours in embedding space
know *which topics* a model is weak at, a two-tower MF over embedding + surface features shares
that knowledge across models, a logistic model on the surface statistics alone knows *how
hard* a prompt looks (length, how many numbers). Their errors differ, so averaging their
probabilities beats each of them, most on small tables where any single view overfits.

``task-ensemble`` adds ``routers.source`` (which source of the table a prompt looks like, and how each
model does there), for tables whose sources are tasks: on the shipped mmlu, mmlu_pro and local tables
it is ahead of the ensemble, on AlpacaEval (sources: instruction collections) behind it (docs/results.md,
docs/heldout.md). ``tierwise train --kind auto`` tries it on tables with two or more sources.
"""

from __future__ import annotations

import numpy as np

from ..features import SURFACE_NAMES
from .base import QualityModel, fit_quality, make_quality_model, register, QUALITY_MODELS

VIEWS = ("all", "embedding", "surface")
DEFAULT_MEMBERS = (("knn", "embedding", {}), ("mf", "all", {}), ("linear", "surface", {}))
TASK_MEMBERS = DEFAULT_MEMBERS + (("source", "all", {}),)


def _view(X: np.ndarray, view: str) -> np.ndarray:
    k = len(SURFACE_NAMES)
    if view == "embedding":
        return X[:, :-k]
    if view == "surface":
        return X[:, -k:]
    return X


@register("ensemble")
class EnsembleQuality(QualityModel):
    uses_groups = True

    def __init__(self, members=DEFAULT_MEMBERS):
        self.members = [(str(kind), str(view), dict(params)) for kind, view, params in members]
        for kind, view, _ in self.members:
            if view not in VIEWS:
                raise ValueError(f"unknown feature view {view!r}; choose one of {VIEWS}")
        self.models: list[QualityModel] = []
        self.active: list[int] = []  # the members fitted (a member that uses sources needs two or more)

    def fit(self, X, Y, groups=None):
        self.active = [i for i, (kind, _, params) in enumerate(self.members)
                       if not QUALITY_MODELS[kind].uses_groups or QUALITY_MODELS[kind].usable(groups, **params)]
        self.models = [fit_quality(make_quality_model(self.members[i][0], **self.members[i][2]),
                                   _view(X, self.members[i][1]), Y, groups) for i in self.active]
        return self

    def predict(self, X):
        out = None
        for model, i in zip(self.models, self.active):
            view = self.members[i][1]
            p = model.predict(_view(X, view))
            out = p.astype(np.float64) if out is None else out + p
        return out / len(self.models)

    def get_state(self):
        params = {"members": [list(m) for m in self.members], "active": self.active, "states": []}
        arrays: dict[str, np.ndarray] = {}
        for i, model in enumerate(self.models):
            p, a = model.get_state()
            params["states"].append(p)
            arrays.update({f"m{i}.{k}": v for k, v in a.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls([tuple(m) for m in params["members"]])
        obj.active = list(params.get("active", range(len(obj.members))))  # artifacts before sources: every member
        for i, (member, p) in enumerate(zip(obj.active, params["states"])):
            kind = obj.members[member][0]
            prefix = f"m{i}."
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            obj.models.append(QUALITY_MODELS[kind].from_state(p, sub))
        return obj


@register("task-ensemble")
class TaskEnsembleQuality(EnsembleQuality):
    """The ensemble plus ``routers.source`` (left out where the table has fewer than two sources)."""

    def __init__(self, members=TASK_MEMBERS):
        super().__init__(members)
