"""Metric definitions checked against examples computed by hand."""

import numpy as np
import pytest

from tierwise.decision import choose
from tierwise.metrics import (
    aiq,
    apgr,
    cost_to_reach,
    cpt,
    nmodel_metrics,
    oracle_curve,
    routellm_curve,
    upper_hull,
)

WEAK = np.array([1, 0, 0, 1])
STRONG = np.array([1, 1, 1, 0])
SCORE = np.array([0.1, 0.9, 0.8, 0.2])


def test_routellm_curve_points_by_hand():
    # thresholds at quantiles 0/.5/1 = 0.1, 0.5, 0.9 -> all strong, prompts 1+2 strong, none strong
    pct, acc = routellm_curve(SCORE, WEAK, STRONG, num_results=2)
    assert pct.tolist() == [0.0, 50.0, 100.0]
    assert acc.tolist() == [0.5, 1.0, 0.75]


def test_apgr_by_hand():
    # AUC = .5*(.5+1)/2 + .5*(1+.75)/2 = .8125; weak .5, strong .75 -> (.8125-.5)/.25
    assert apgr(SCORE, WEAK, STRONG, num_results=2) == pytest.approx(1.25)


def test_apgr_of_perfectly_wrong_and_random_routers():
    rng = np.random.default_rng(0)
    weak = rng.random(20000) < 0.6
    strong = rng.random(20000) < 0.8
    assert apgr(rng.random(20000), weak, strong) == pytest.approx(0.5, abs=0.03)
    # sending exactly the prompts only the strong model solves first beats random by far
    oracle_score = strong.astype(float) - weak.astype(float)
    assert apgr(oracle_score + 1e-6 * rng.random(20000), weak, strong) > 0.9


def test_cpt_by_hand():
    # target accuracy .5 + .5 * .25 = .625, reached on the segment (0%, .5) -> (50%, 1.0) at 12.5%
    assert cpt(SCORE, WEAK, STRONG, 0.5, num_results=2) == pytest.approx(12.5)
    # PGR 100% (acc .75) is first reached at 25% on the same segment
    assert cpt(SCORE, WEAK, STRONG, 1.0, num_results=2) == pytest.approx(25.0)


def test_upper_hull_drops_dominated_and_flat_tail():
    pts = np.array([[1, 0.5], [2, 0.55], [3, 0.9], [4, 0.8]])
    assert upper_hull(pts).tolist() == [[1, 0.5], [3, 0.9]]


def test_aiq_and_cost_to_reach_by_hand():
    hull = upper_hull(np.array([[1, 0.5], [2, 0.55], [3, 0.9], [4, 0.8]]))
    # area: (0.5+0.9)/2*2 = 1.4 on [1,3], then flat 0.9 on [3,4] -> 2.3 / 3
    assert aiq(hull, 1, 4) == pytest.approx(2.3 / 3, abs=1e-4)
    assert cost_to_reach(hull, 0.7) == pytest.approx(2.0)
    assert cost_to_reach(hull, 0.95) is None


def test_zero_router_aiq_is_hull_of_single_models():
    correct = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], dtype=float)  # cheap .25, dear .75
    cost = np.tile([1.0, 3.0], (4, 1))
    m = nmodel_metrics(np.array([[1.0, 0.25], [3.0, 0.75]]), correct, cost)
    assert m["aiq"] == pytest.approx(0.5)  # straight line from .25 to .75
    assert m["cost_to_match_best"] == pytest.approx(1.0)


def test_oracle_routes_to_cheapest_correct_model():
    correct = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], dtype=float)
    cost = np.tile([1.0, 3.0], (4, 1))
    curve = oracle_curve(correct, cost)
    # at a small positive cost weight: row 0 -> cheap, rows 1,2 -> dear, row 3 -> cheap (both fail)
    best = np.argmax(curve.quality)
    assert curve.quality[best] == pytest.approx(0.75)
    assert curve.cost[best] == pytest.approx((1 + 3 + 3 + 1) / 4)


def test_decision_rules():
    q = np.array([[0.5, 0.9], [0.8, 0.85]])
    c = np.array([1.0, 10.0])
    assert choose(q, c, "cost_weight", 0).tolist() == [1, 1]
    assert choose(q, c, "cost_weight", 0.1).tolist() == [1, 0]
    assert choose(q, c, "cost_weight", np.inf).tolist() == [0, 0]
    assert choose(q, c, "threshold", 0.8).tolist() == [1, 0]
    assert choose(q, c, "threshold", 0.95).tolist() == [1, 1]  # none clears: best predicted
    assert choose(q, c, "cost_weight", 0, allowed=np.array([True, False])).tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown decision rule"):
        choose(q, c, "nope", 0)
