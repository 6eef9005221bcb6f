"""The kNN router's neighbour search: the cell index finds (nearly) the exact neighbours, batch and
single decisions agree, artifacts keep the index, and old artifacts without one still scan."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.routers._cells import Cells
from tierwise.routers.knn import KNNQuality


def _clustered(n: int, d: int = 64, topics: int = 60, seed: int = 0):
    """Rows around `topics` directions; model j is good on topics with bit j set (learnable)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, d))
    topic = rng.integers(0, topics, n)
    X = (centres[topic] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
    Y = np.stack([((topic >> j) & 1).astype(np.float32) for j in range(3)], axis=1)
    Y = np.where(rng.random(Y.shape) < 0.1, 1 - Y, Y)
    return X, Y


@pytest.fixture(scope="module")
def table():
    return _clustered(12_000)


def test_cells_cover_every_row_once(table):
    X, _ = table
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cells, order = Cells.fit(Xn)
    assert sorted(order.tolist()) == list(range(len(X)))
    assert cells.starts[0] == 0 and cells.starts[-1] == len(X) and np.all(np.diff(cells.starts) >= 0)
    assert len(cells.centroids) == round(2 * np.sqrt(len(X)))
    rows = cells.candidates(Xn[order][0])
    assert len(set(rows.tolist())) == len(rows) and len(rows) < len(X) / 4  # reads a small part only


def test_cell_search_matches_the_exact_scan(table):
    X, Y = table
    fast = KNNQuality().fit(X, Y)
    exact = KNNQuality(cells=False).fit(X, Y)
    assert fast.cells is not None and exact.cells is None
    Q, _ = _clustered(400, seed=1)
    a, b = fast.predict(Q), exact.predict(Q)
    assert np.abs(a - b).mean() < 0.02  # the same neighbourhoods, nearly always
    # and the decisions they lead to (best model per prompt) agree almost everywhere
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.95


def test_batch_and_single_decisions_are_identical(table):
    X, Y = table
    model = KNNQuality().fit(X, Y)
    Q, _ = _clustered(50, seed=2)
    batch = model.predict(Q)
    single = np.stack([model.predict(q[None, :])[0] for q in Q])
    assert np.array_equal(batch, single)


def test_artifact_keeps_the_index_and_old_artifacts_still_scan(table):
    X, Y = table
    model = KNNQuality().fit(X, Y)
    params, arrays = model.get_state()
    again = KNNQuality.from_state(params, arrays)
    Q, _ = _clustered(20, seed=3)
    assert again.cells is not None and np.array_equal(again.predict(Q), model.predict(Q))
    old = {k: v for k, v in arrays.items() if not k.startswith("cell_")}
    legacy = KNNQuality.from_state({k: v for k, v in params.items() if k != "cells"}, old)
    assert legacy.cells is None and legacy.predict(Q).shape == (20, 3)


def test_small_tables_scan_every_row():
    X, Y = _clustered(500)
    assert KNNQuality().fit(X, Y).cells is None
