"""The kNN router's neighbour search: pooled cells predict as well as the exact scan, scoring the
nearest cells' rows finds (nearly) the exact neighbours, batch and single decisions agree,
artifacts keep the index, and old artifacts without one still scan."""

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


def test_cell_rows_scan_matches_the_exact_scan(table):
    X, Y = table
    fast = KNNQuality(pooled=False).fit(X, Y)
    exact = KNNQuality(cells=False).fit(X, Y)
    assert fast.cells is not None and exact.cells is None
    Q, _ = _clustered(400, seed=1)
    a, b = fast.predict(Q), exact.predict(Q)
    assert np.abs(a - b).mean() < 0.02  # the same neighbourhoods, nearly always
    # and the decisions they lead to (best model per prompt) agree almost everywhere
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.95


def test_pooled_cells_predict_as_well_as_the_exact_scan():
    X, Y = _clustered(12_400)
    train, held = slice(0, 12_000), slice(12_000, None)
    pooled = KNNQuality().fit(X[train], Y[train])
    exact = KNNQuality(cells=False).fit(X[train], Y[train])
    assert pooled.pooled and pooled.cells is not None
    a, b = pooled.predict(X[held]), exact.predict(X[held])
    brier = lambda p: float(((p - Y[held]) ** 2).mean())  # noqa: E731
    assert brier(a) <= brier(b) + 0.005  # held-out prompts of the same topics
    assert np.abs(a - b).mean() < 0.06
    # a neighbourhood is the nearest cells holding at least k rows, nearest first
    q = pooled._project(X[held][:1] / np.linalg.norm(X[held][:1]))[0]
    near = pooled.cells.covering(q, pooled.k)
    sizes = np.diff(pooled.cells.starts)[near]
    sims = pooled.cells.centroids[near] @ q
    assert sizes.sum() >= pooled.k and sizes[:-1].sum() < pooled.k and np.all(np.diff(sims) <= 0)


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
    legacy = KNNQuality.from_state({k: v for k, v in params.items() if k not in ("cells", "pooled")}, old)
    assert legacy.cells is None and legacy.predict(Q).shape == (20, 3)
    # artifacts with cells but from before pooling keep scoring the nearest cells' rows
    unpooled = KNNQuality.from_state({k: v for k, v in params.items() if k != "pooled"}, arrays)
    assert unpooled.cells is not None and not unpooled.pooled


def test_small_tables_scan_every_row():
    X, Y = _clustered(500)
    assert KNNQuality().fit(X, Y).cells is None
