"""k-nearest-neighbour router over prompt embeddings (the classic baseline of RouterBench/RouteLLM)."""

from __future__ import annotations

import numpy as np

from .base import QualityModel, column_means, register


@register("knn")
class KNNQuality(QualityModel):
    """Mean outcome of the k most similar training prompts, shrunk toward each model's prior.

    The shrinkage (``prior_weight`` pseudo-neighbours) keeps a sparse neighbourhood from producing
    0/1 certainties that would send a prompt to the cheapest model on two lucky neighbours.

    Speed: one decision scans every stored row, so the rows are projected once, at fit time, onto
    their top ``dims`` principal directions (uncentred, which best preserves cosine similarity).
    The scan then reads n x 64 floats instead of n x 256: memory traffic, not arithmetic, is what
    costs at 10k+ rows. ``dims=0`` keeps the full embedding.
    """

    def __init__(self, k: int = 40, prior_weight: float = 2.0, dims: int = 64):
        self.k = int(k)
        self.prior_weight = float(prior_weight)
        self.dims = int(dims)
        self.P: np.ndarray | None = None  # (d, dims) projection, or None
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None
        self.prior: np.ndarray | None = None

    def fit(self, X, Y):
        Xn = _normalise(np.asarray(X, dtype=np.float32))
        self.P = None
        if 0 < self.dims < Xn.shape[1] and len(Xn) > self.dims:
            _, vecs = np.linalg.eigh((Xn.T @ Xn).astype(np.float64))
            self.P = np.ascontiguousarray(vecs[:, ::-1][:, : self.dims], dtype=np.float32)
        # rows are stored as float16 in artifacts; round them now so a reloaded router scores identically
        self._set(self._project(Xn).astype(np.float16).astype(np.float32), np.asarray(Y, dtype=np.float32))
        return self

    def _project(self, Xn: np.ndarray) -> np.ndarray:
        return Xn if self.P is None else _normalise(Xn @ self.P)

    def _set(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.Y = Y
        self.prior = column_means(Y)
        # per-call work is only the scan: outcome sums and counts are precomputed here
        self._hits = np.nan_to_num(Y).astype(np.float32)
        self._valid = (~np.isnan(Y)).astype(np.float32)

    def predict(self, X):
        Xq = self._project(_normalise(np.asarray(X, dtype=np.float32)))
        k = min(self.k, len(self.X))
        out = np.empty((len(Xq), self.Y.shape[1]))
        for start in range(0, len(Xq), 2048):  # bound memory on big batches
            sims = Xq[start : start + 2048] @ self.X.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(self.X) else np.broadcast_to(
                np.arange(len(self.X)), sims.shape)
            hits = self._hits[idx].sum(axis=1)
            counts = self._valid[idx].sum(axis=1)
            out[start : start + 2048] = (hits + self.prior_weight * self.prior) / (counts + self.prior_weight)
        return out

    def get_state(self):
        arrays = {"X": self.X.astype(np.float16), "Y": self.Y, "prior": self.prior}
        if self.P is not None:
            arrays["P"] = self.P
        return {"k": self.k, "prior_weight": self.prior_weight, "dims": self.dims}, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["k"], params["prior_weight"], params.get("dims", 0))
        obj.P = arrays["P"].astype(np.float32) if "P" in arrays else None
        obj._set(arrays["X"].astype(np.float32), arrays["Y"].astype(np.float32))
        return obj


def _normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-8)
