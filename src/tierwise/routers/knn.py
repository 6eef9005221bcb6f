"""k-nearest-neighbour router over prompt embeddings (the classic baseline of RouterBench/RouteLLM)."""

from __future__ import annotations

import numpy as np

from .base import QualityModel, column_means, register


@register("knn")
class KNNQuality(QualityModel):
    """Mean outcome of the k most similar training prompts, shrunk toward each model's prior.

    The shrinkage (``prior_weight`` pseudo-neighbours) keeps a sparse neighbourhood from producing
    0/1 certainties that would send a prompt to the cheapest model on two lucky neighbours.
    """

    def __init__(self, k: int = 40, prior_weight: float = 2.0):
        self.k = int(k)
        self.prior_weight = float(prior_weight)
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None
        self.prior: np.ndarray | None = None

    def fit(self, X, Y):
        self.X = _normalise(np.asarray(X, dtype=np.float32))
        self.Y = np.asarray(Y, dtype=np.float32)
        self.prior = column_means(self.Y)
        return self

    def predict(self, X):
        Xq = _normalise(np.asarray(X, dtype=np.float32))
        k = min(self.k, len(self.X))
        valid = ~np.isnan(self.Y)
        Y0 = np.nan_to_num(self.Y)
        out = np.empty((len(Xq), self.Y.shape[1]))
        for start in range(0, len(Xq), 2048):  # bound memory on big batches
            sims = Xq[start : start + 2048] @ self.X.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            hits = Y0[idx].sum(axis=1)
            counts = valid[idx].sum(axis=1)
            out[start : start + 2048] = (hits + self.prior_weight * self.prior) / (counts + self.prior_weight)
        return out

    def get_state(self):
        return {"k": self.k, "prior_weight": self.prior_weight}, {
            "X": self.X.astype(np.float16),
            "Y": self.Y,
            "prior": self.prior,
        }

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["k"], params["prior_weight"])
        obj.X = arrays["X"].astype(np.float32)
        obj.Y = arrays["Y"].astype(np.float32)
        obj.prior = arrays["prior"]
        return obj


def _normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-8)
