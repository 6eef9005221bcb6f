"""An inverted-file index over unit vectors: the kNN router's neighbour search, sublinear in rows.

Rows are grouped by spherical k-means into ``~2 sqrt(n)`` cells and stored cell by cell. A query
scores the cell centroids; then either the nearest cells holding k rows are its neighbourhood
(``covering``: the kNN router pools their precomputed outcome sums, ``cells`` dot products per
decision), or it takes the nearest cells until about ``scan`` rows are covered and scores only
those rows (``candidates``: ``cells + scan`` dot products instead of ``n``; at 100k rows ~1,700
instead of 100,000). Pure numpy, deterministic (seeded), nothing learned at load time:
the centroids and cell boundaries are stored in the router artifact.
"""

from __future__ import annotations

import math

import numpy as np

from .base import unit_rows

MIN_ROWS = 4096  # below this an exact scan is as fast as probing cells
SCAN_ROWS = 1024  # rows scored per query (at least), whatever the table's size
_ITERATIONS = 10


class Cells:
    def __init__(self, centroids: np.ndarray, starts: np.ndarray, scan: int = SCAN_ROWS):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.scan = int(scan)
        sizes = self._sizes = np.diff(self.starts)
        self._few = min(len(sizes), 8)  # cells ranked by `covering`: enough for k rows in all but empty regions
        self._rows = [np.arange(a, b) for a, b in zip(self.starts[:-1], self.starts[1:])]
        # how many nearest cells to read: enough for `scan` rows with cells of typical size
        self.probe = int(min(len(sizes), max(4, math.ceil(self.scan / max(1.0, float(np.median(sizes)))))))

    @classmethod
    def fit(cls, X: np.ndarray, seed: int = 0) -> tuple["Cells", np.ndarray]:
        """Cells for unit rows ``X`` and the row order that stores them cell by cell."""
        n = len(X)
        n_cells = max(2, int(round(2 * math.sqrt(n))))
        rng = np.random.default_rng(seed)
        C = X[rng.choice(n, n_cells, replace=False)].copy()
        for _ in range(_ITERATIONS):
            assign = _nearest(X, C)
            order = np.argsort(assign, kind="stable")
            counts = np.bincount(assign, minlength=n_cells)
            sums = np.zeros_like(C)
            full = np.flatnonzero(counts)
            sums[full] = np.add.reduceat(X[order], np.concatenate([[0], np.cumsum(counts[full])[:-1]]), axis=0)
            empty = counts == 0
            if empty.any():  # re-seed empty cells on random rows
                sums[empty] = X[rng.choice(n, int(empty.sum()), replace=False)]
            C = unit_rows(sums)
        assign = _nearest(X, C)
        order = np.argsort(assign, kind="stable")
        starts = np.searchsorted(assign[order], np.arange(n_cells + 1))
        return cls(C, starts), order

    def candidates(self, q: np.ndarray) -> np.ndarray:
        """Row indices (into the cell-ordered rows) worth scoring for unit query ``q`` (dims,)."""
        near = np.argpartition(-(self.centroids @ q), self.probe - 1)[: self.probe]
        return np.concatenate([self._rows[c] for c in near])

    def covering(self, q: np.ndarray, k: int) -> np.ndarray:
        """The cells nearest ``q`` (dims,), nearest first, as few as hold at least ``k`` rows."""
        sims = self.centroids @ q
        near = np.argpartition(-sims, self._few - 1)[: self._few] if self._few < len(sims) else np.arange(len(sims))
        near = near[np.argsort(-sims[near], kind="stable")]
        return near[: int(np.searchsorted(self._sizes[near].cumsum(), k)) + 1]

    def covering_many(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``covering`` for each row of ``Q`` (b, dims), as (b, f) cell indices nearest first and a (b, f)
        mask of the ones ``covering`` returns (the same cells, in the same order)."""
        C = self.centroids
        sims = np.stack([C @ q for q in Q])  # one product per query: the same numbers as ``covering``'s
        if self._few < sims.shape[1]:
            near = np.argpartition(-sims, self._few - 1, axis=1)[:, : self._few]
        else:
            near = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        near = np.take_along_axis(near, np.argsort(-np.take_along_axis(sims, near, 1), axis=1, kind="stable"), 1)
        held = self._sizes[near].cumsum(axis=1)
        upto = (held < k).sum(axis=1) + 1  # ``covering``: up to the first cell where k rows are held
        return near, np.arange(near.shape[1])[None, :] < upto[:, None]

    def sums(self, values: np.ndarray) -> np.ndarray:
        """(cells, m) column sums of cell-ordered rows ``values`` (n, m), cell by cell."""
        out = np.zeros((len(self.centroids), values.shape[1]), dtype=values.dtype)
        full = self._sizes > 0
        out[full] = np.add.reduceat(values, self.starts[:-1][full], axis=0)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"cell_centroids": self.centroids, "cell_starts": self.starts}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Cells | None":
        if "cell_centroids" not in arrays:
            return None
        return cls(arrays["cell_centroids"], arrays["cell_starts"])


def _nearest(X: np.ndarray, C: np.ndarray, chunk: int = 8192) -> np.ndarray:
    return np.concatenate([np.argmax(X[i : i + chunk] @ C.T, axis=1) for i in range(0, len(X), chunk)])

