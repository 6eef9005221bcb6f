"""k-nearest-neighbour router over prompt embeddings (the classic baseline of RouterBench/RouteLLM)."""

from __future__ import annotations

import numpy as np

from ._cells import MIN_ROWS, Cells
from .base import QualityModel, column_means, register, unit_rows


@register("knn")
class KNNQuality(QualityModel):
    """Mean outcome of the k most similar training prompts, shrunk toward each model's prior.

    The shrinkage (``prior_weight`` pseudo-neighbours) keeps a sparse neighbourhood from producing
    0/1 certainties that would send a prompt to the cheapest model on two lucky neighbours.

    Speed: the rows are projected once, at fit time, onto their top ``dims`` principal directions
    (uncentred, which best preserves cosine similarity), so a scan reads n x 64 floats instead of
    n x 256: memory traffic, not arithmetic, is what costs at 10k+ rows. ``dims=0`` keeps the full
    embedding. Below ``MIN_ROWS`` rows a decision scans every row for the exact k nearest. From
    ``MIN_ROWS`` rows on (``cells`` on "auto") the rows are grouped into cells (:mod:`._cells`) and,
    ``pooled`` (the default), a query's neighbours are the nearest cells holding at least k rows:
    their outcome sums are precomputed, so a decision scores only the cell centroids (~2 sqrt(n))
    and costs about the same at 100k rows as at 5k (``bench/knn_cells_quality.py``: CV AIQ within
    +-0.002 of the exact scan on every shipped table). ``pooled=False`` scores the rows of the
    nearest cells (closer to the exact k nearest, ~3x the time); ``cells=False`` always scans every row.
    """

    def __init__(self, k: int = 40, prior_weight: float = 2.0, dims: int = 64, cells: bool | str = "auto",
                 pooled: bool = True):
        self.k = int(k)
        self.pooled = bool(pooled)
        self.prior_weight = float(prior_weight)
        self.dims = int(dims)
        self.cells_mode = cells
        self.cells: Cells | None = None
        self.P: np.ndarray | None = None  # (d, dims) projection, or None
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None
        self.prior: np.ndarray | None = None

    def fit(self, X, Y):
        Xn = unit_rows(np.asarray(X, dtype=np.float32))
        self.P = None
        if 0 < self.dims < Xn.shape[1] and len(Xn) > self.dims:
            _, vecs = np.linalg.eigh((Xn.T @ Xn).astype(np.float64))
            self.P = np.ascontiguousarray(vecs[:, ::-1][:, : self.dims], dtype=np.float32)
        # rows are stored as float16 in artifacts; round them now so a reloaded router scores identically
        Xp = self._project(Xn).astype(np.float16).astype(np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        self.cells = None
        if self.cells_mode is True or (self.cells_mode == "auto" and len(Xp) >= MIN_ROWS):
            self.cells, order = Cells.fit(Xp)
            Xp, Y = Xp[order], Y[order]  # stored cell by cell
        self._set(Xp, Y)
        return self

    def _project(self, Xn: np.ndarray) -> np.ndarray:
        return Xn if self.P is None else unit_rows(Xn @ self.P)

    def _set(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.Y = Y
        self.prior = column_means(Y)
        # per-call work is only the scan: outcome sums and counts are precomputed here
        self._hits = np.nan_to_num(Y).astype(np.float32)
        self._valid = (~np.isnan(Y)).astype(np.float32)
        if self.cells is not None:  # outcome sums and counts per cell side by side, for pooled neighbourhoods
            self._cell_sums = self.cells.sums(np.hstack([self._hits, self._valid]))

    def predict(self, X):
        Xq = np.asarray(X, dtype=np.float32)
        if self.P is not None:  # queries are not normalised: a query's ranking of rows and cells is scale-free
            Xq = Xq @ self.P
        if self.cells is not None:  # a batch gets exactly what single decisions get
            if len(Xq) == 1:  # a routing decision
                return self._predict_in_cells(Xq[0])[None, :]
            if self.pooled and len(Xq):
                near, take = self.cells.covering_many(Xq, self.k)
                sums = (self._cell_sums[near] * take[:, :, None]).sum(axis=1)  # the covering cells' sums
                m = len(self.prior)
                return self._shrunk(sums[:, :m], sums[:, m:])
            return np.stack([self._predict_in_cells(q) for q in Xq]) if len(Xq) else np.empty((0, self.Y.shape[1]))
        k = min(self.k, len(self.X))
        out = np.empty((len(Xq), self.Y.shape[1]))
        step = max(1, min(2048, 2 ** 24 // max(1, len(self.X))))  # bound the (batch x rows) similarity block
        for start in range(0, len(Xq), step):
            sims = Xq[start : start + step] @ self.X.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(self.X) else np.broadcast_to(
                np.arange(len(self.X)), sims.shape)
            out[start : start + step] = self._estimate(idx)
        return out

    def _estimate(self, near: np.ndarray) -> np.ndarray:
        """Shrunk mean outcome of the neighbour rows ``near`` ((k,) -> (m,), or (b, k) -> (b, m))."""
        return self._shrunk(self._hits[near].sum(axis=-2), self._valid[near].sum(axis=-2))

    def _shrunk(self, hits: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return (hits + self.prior_weight * self.prior) / (counts + self.prior_weight)

    def _predict_in_cells(self, q: np.ndarray) -> np.ndarray:
        if self.pooled:
            sums = self._cell_sums[self.cells.covering(q, self.k)].sum(axis=0)
            m = len(self.prior)
            return self._shrunk(sums[:m], sums[m:])
        rows = self.cells.candidates(q)
        sims = self.X[rows] @ q
        k = min(self.k, len(rows))
        return self._estimate(rows[np.argpartition(-sims, k - 1)[:k]] if k < len(rows) else rows)

    def get_state(self):
        arrays = {"X": self.X.astype(np.float16), "Y": self.Y, "prior": self.prior}
        if self.P is not None:
            arrays["P"] = self.P
        if self.cells is not None:
            arrays.update(self.cells.arrays())
        return {"k": self.k, "prior_weight": self.prior_weight, "dims": self.dims,
                "cells": self.cells_mode, "pooled": self.pooled}, arrays

    @classmethod
    def from_state(cls, params, arrays):
        # artifacts from before the cell index have none: they keep scanning every row; from before pooling,
        # they keep scoring the rows of the nearest cells
        obj = cls(params["k"], params["prior_weight"], params.get("dims", 0), params.get("cells", False),
                  params.get("pooled", False))
        obj.P = arrays["P"].astype(np.float32) if "P" in arrays else None
        obj.cells = Cells.from_arrays(arrays)
        obj._set(arrays["X"].astype(np.float32), arrays["Y"].astype(np.float32))
        return obj

