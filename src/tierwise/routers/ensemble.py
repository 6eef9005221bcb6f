"""The default learned router: an average of complementary views of a prompt.

Measured on the shipped tables (see ``bench/router_quality.py``): neighbours in embedding space
know *which topics* a model is weak at, a two-tower MF over embedding + surface features shares
that knowledge across models, and a logistic model on the surface statistics alone knows *how
hard* a prompt looks (length, how many numbers). Their errors differ, so averaging their
probabilities beats each of them, most on small tables where any single view overfits.
"""

from __future__ import annotations

import numpy as np

from ..features import SURFACE_NAMES
from .base import QualityModel, make_quality_model, register, QUALITY_MODELS

VIEWS = ("all", "embedding", "surface")
DEFAULT_MEMBERS = (("knn", "embedding", {}), ("mf", "all", {}), ("linear", "surface", {}))


def _view(X: np.ndarray, view: str) -> np.ndarray:
    k = len(SURFACE_NAMES)
    if view == "embedding":
        return X[:, :-k]
    if view == "surface":
        return X[:, -k:]
    return X


@register("ensemble")
class EnsembleQuality(QualityModel):
    def __init__(self, members=DEFAULT_MEMBERS):
        self.members = [(str(kind), str(view), dict(params)) for kind, view, params in members]
        for kind, view, _ in self.members:
            if view not in VIEWS:
                raise ValueError(f"unknown feature view {view!r}; choose one of {VIEWS}")
        self.models: list[QualityModel] = []

    def fit(self, X, Y):
        self.models = [make_quality_model(kind, **params).fit(_view(X, view), Y) for kind, view, params in self.members]
        return self

    def predict(self, X):
        out = None
        for model, (_, view, _) in zip(self.models, self.members):
            p = model.predict(_view(X, view))
            out = p.astype(np.float64) if out is None else out + p
        return out / len(self.models)

    def get_state(self):
        params = {"members": [list(m) for m in self.members], "states": []}
        arrays: dict[str, np.ndarray] = {}
        for i, model in enumerate(self.models):
            p, a = model.get_state()
            params["states"].append(p)
            arrays.update({f"m{i}.{k}": v for k, v in a.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls([tuple(m) for m in params["members"]])
        for i, ((kind, _, _), p) in enumerate(zip(obj.members, params["states"])):
            prefix = f"m{i}."
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            obj.models.append(QUALITY_MODELS[kind].from_state(p, sub))
        return obj
