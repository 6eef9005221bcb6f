"""The hull guard (never below mixing single models) and per-request expected cost."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tierwise.calibration import CrossFitZeroRouter, HullGuard, best_quality_knobs, draw, hull_vertices, under_zero
from tierwise.evaluate import ZERO_CROSSFIT, ZERO_PER_SOURCE, evaluate, per_source_zero_points
from tierwise.metrics import hull_quality, nmodel_metrics, single_model_points, upper_hull
from tierwise.router import Router
from tierwise.routers.cost import CostModel
from tierwise.table import OutcomeTable, load_table

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega apple river stone cloud music paper glass light").split()


def random_outcome_table(n: int = 1500, seed: int = 0) -> OutcomeTable:
    """Outcomes independent of the prompt: no router can beat mixing the single models. The middle model
    makes the hull strongly concave, so a router that spreads traffic over all three is under it."""
    rng = np.random.default_rng(seed)
    prompts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) + f" #{i}" for i in range(n)]
    quality = np.array([0.2, 0.7, 0.75])
    correct = (rng.random((n, 3)) < quality).astype(float)
    cost = np.tile([1.0, 2.0, 4.0], (n, 1))
    return OutcomeTable(prompts=prompts, models=["small", "mid", "large"], correct=correct, cost=cost,
                        source=np.full(n, "synthetic", dtype=object), contaminated=np.zeros(n, bool),
                        path="<random outcomes>", cost_unit="units")


@pytest.fixture(scope="module")
def random_table():
    return random_outcome_table()


@pytest.fixture(scope="module")
def guarded_router(random_table):
    from tierwise.evaluate import cross_val_predict, fold_ids
    from tierwise.features import Featurizer

    X = Featurizer().transform(random_table.prompts)
    params = {"k": 3, "prior_weight": 0.0}  # few neighbours: noisy predictions spread traffic over all models
    oof = cross_val_predict("knn", X, random_table.correct, fold_ids(len(random_table), 5), **params)
    # calibrated on every row's out-of-fold prediction (what `tierwise train` does)
    return Router("knn", knob="quality=0.9", **params).fit(random_table, X=X, oof=oof)


def _deployed_gap(router: Router, table: OutcomeTable) -> np.ndarray:
    cal = router.calibration
    hull = upper_hull(single_model_points(table.correct, table.cost))
    cost, quality = np.array(cal["cost"]), np.array(cal["quality"])
    comparable = cost >= hull[0, 0] - 1e-9
    return np.where(comparable, hull_quality(hull, cost) - quality, 0.0)


def test_raw_router_falls_under_the_zero_router_on_random_outcomes(guarded_router, random_table):
    cal = guarded_router.calibration
    hull = upper_hull(single_model_points(random_table.correct, random_table.cost))
    raw_gap = hull_quality(hull, np.array(cal["raw_cost"])) - np.array(cal["raw_quality"])
    assert raw_gap.max() > 0.03  # the unguarded rule wastes quality at some knobs ...
    assert guarded_router.guard is not None and guarded_router.guard.guarded.sum() >= 10
    # ... the deployed curve never does: every knob is on or above the hull of the single models
    assert _deployed_gap(guarded_router, random_table).max() <= 1e-9


def test_eval_reports_raw_and_deployed_and_the_deployed_is_not_under_zero(random_table):
    # few neighbours, no prior: a router that acts on noise (the default kNN shrinks enough to stay near the hull)
    rep = evaluate(random_table, ["knn"], folds=4, cost_modes=("request", "mean"),
                   router_params={"knn": {"k": 3, "prior_weight": 0.0}})
    raw, deployed, zero = (rep.routers[k] for k in ("knn", "knn +hull", "zero_router"))
    assert raw["knobs_under_zero"] > 0 and deployed["knobs_under_zero"] == 0
    assert deployed["aiq"] >= zero["aiq"] - 0.005
    assert deployed["guarded_knobs"] > 0 and "knn (mean cost)" in rep.routers


def test_eval_reports_the_zero_router_deployed_from_other_rows_and_per_source(random_table):
    rep = evaluate(random_table, ["knn"], folds=4)
    zero, crossfit = rep.routers["zero_router"]["aiq"], rep.routers[ZERO_CROSSFIT]["aiq"]
    assert zero - 0.02 < crossfit <= zero + 1e-9  # the hull chosen on other rows: never better, near it here
    assert ZERO_PER_SOURCE not in rep.routers  # one source: nothing to tell apart
    # two sources, each with its own best model at about the same price: mixing single models cannot
    # follow them (0.5 at any price), knowing the source can (0.9 from halfway: AIQ 0.8 over the price
    # range), and a router that reads the prompt does
    rng = np.random.default_rng(3)
    n = 600
    first = np.arange(n) < n // 2
    prompts = [("integral derivative limit " if f else "poem sonnet rhyme ") + " ".join(rng.choice(WORDS, 5)) + f" #{i}"
               for i, f in enumerate(first)]
    p_ok = np.where(first[:, None], [0.9, 0.1], [0.1, 0.9])
    table = OutcomeTable(prompts=prompts, models=["a", "b"], correct=(rng.random((n, 2)) < p_ok).astype(float),
                         cost=np.tile([1.0, 1.1], (n, 1)), source=np.where(first, "math", "poetry").astype(object),
                         contaminated=np.zeros(n, bool), path="<two sources>", cost_unit="units")
    rep = evaluate(table, ["knn"], folds=4)
    zero, per_source, knn = (rep.routers[k]["aiq"] for k in ("zero_router", ZERO_PER_SOURCE, "knn"))
    assert zero < 0.55 and per_source == pytest.approx(0.8, abs=0.03) and knn > 0.75
    one = np.full(n, "all", dtype=object)  # a single source: exactly the zero router
    assert nmodel_metrics(per_source_zero_points(table.correct, table.cost, one), table.correct, table.cost)["aiq"] == \
        pytest.approx(zero)


def test_guarded_decisions_mix_the_hull_neighbours_reproducibly(guarded_router, random_table):
    guard = guarded_router.guard
    k = next(i for i in np.flatnonzero(guard.guarded) if 0.2 < guard.p[i] < 0.8)
    knob, lo, hi, p = guard.knobs[k], guard.lo[k], guard.hi[k], guard.p[k]
    verts = hull_vertices(random_table.correct, random_table.cost)
    assert {lo, hi} <= set(verts.tolist())
    prompts = random_table.prompts[:400]
    decisions = [guarded_router.route(t, knob) for t in prompts]
    assert all(d.mixed and d.guard.startswith("hull-mix") for d in decisions)
    assert {d.model for d in decisions} == {guarded_router.models[lo], guarded_router.models[hi]}
    share = np.mean([d.model == guarded_router.models[hi] for d in decisions])
    assert abs(share - p) < 0.08
    # the coin is the prompt's (or the request id's): the same request always goes the same way
    assert [guarded_router.route(t, knob).model for t in prompts[:50]] == [d.model for d in decisions[:50]]
    by_id = {guarded_router.route(prompts[0], knob, request_id=f"req-{i}").model for i in range(40)}
    assert len(by_id) == 2
    assert guarded_router.route_batch(prompts[:50], knob) == [d.model for d in decisions[:50]]


def test_guard_respects_allowed_models(guarded_router):
    guard = guarded_router.guard
    k = next(i for i in np.flatnonzero(guard.guarded) if 0.2 < guard.p[i] < 0.8)
    hi = guarded_router.models[guard.hi[k]]
    allowed = [m for m in guarded_router.models if m != hi]
    for text in ("one two", "alpha beta gamma", "river stone cloud music"):
        d = guarded_router.route(text, guard.knobs[k], allowed=allowed)
        assert d.model in allowed and not d.mixed and d.guard == f"hull-skip: {hi} not allowed"


def test_guard_and_cost_model_survive_the_artifact_and_old_artifacts_load(guarded_router, random_table, tmp_path):
    path = guarded_router.save(tmp_path / "g.tw")
    again = Router.load(path)
    np.testing.assert_array_equal(again.guard.lo, guarded_router.guard.lo)
    np.testing.assert_allclose(again.guard.p, guarded_router.guard.p)
    texts = random_table.prompts[:60]
    assert [again.route(t, "quality=0.9").model for t in texts] == [guarded_router.route(t, "quality=0.9").model for t in texts]
    # a version-1 artifact (no cost model, no guard) still loads: per-model mean cost, the plain rule
    with zipfile.ZipFile(path) as zf:
        meta, arrays = json.loads(zf.read("router.json")), zf.read("arrays.npz")
    meta.update(version=1, cost_model=None)
    meta["calibration"].pop("guard")
    old = tmp_path / "v1.tw"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("router.json", json.dumps(meta))
        zf.writestr("arrays.npz", arrays)
    v1 = Router.load(old)
    assert v1.guard is None and v1.cost_model.mode == "mean"
    d = v1.route(texts[0])
    assert not d.mixed and d.guard is None and d.costs == dict(zip(v1.models, v1.costs.tolist()))


def test_guard_serves_the_best_model_where_the_router_best_is_worse():
    # 2 models, the dear one right on every row; knob 0: random picks (behind the best model);
    # knob 0.5: the dear model exactly where the cheap one would have been right (under the hull)
    rng = np.random.default_rng(1)
    correct = np.column_stack([rng.random(400) < 0.3, np.ones(400)]).astype(float)
    cost = np.tile([1.0, 3.0], (400, 1))
    knobs = np.array([0.0, 0.5, np.inf])
    picks = np.stack([rng.integers(0, 2, 400), correct[:, 0].astype(int), np.zeros(400, int)])
    guard = HullGuard.fit(knobs, picks, correct, cost, best_knobs=best_quality_knobs("cost_weight", knobs))
    assert (guard.lo[0], guard.hi[0], guard.p[0]) == (1, 1, 1.0)
    assert guard.lo[1] == 0 and guard.hi[1] == 1 and guard.p[1] == pytest.approx(correct[:, 0].mean())
    assert guard.lo[2] == -1  # always the cheapest model: already a hull point
    Q, C, _ = guard.rows(picks, correct, cost)
    assert under_zero(Q, C, correct, cost)["knobs_under_zero"] == 0
    raw = under_zero(correct[np.arange(400), picks], cost[np.arange(400), picks], correct, cost)
    assert raw["knobs_under_zero"] == 1 and raw["max_under_zero"] > 0.15


def test_guard_serves_no_mixture_the_table_cannot_pin_down():
    # cheap A (0.3), middle B (0.6 in truth: on the chord of A and C), dear C (0.9); on these 300 rows B
    # is lucky enough to be a hull vertex, but not on every fold: which two models to mix is noise here
    rng = np.random.default_rng(6)
    correct = (rng.random((300, 3)) < [0.3, 0.6, 0.9]).astype(float)
    cost = np.tile([1.0, 2.0, 3.0], (300, 1))
    zero = CrossFitZeroRouter(correct, cost)
    assert list(hull_vertices(correct, cost)) == [0, 1, 2]
    assert any(1 not in verts for _, verts, _ in zero.parts)  # a fold whose hull has no B
    assert not zero.agrees(2.5, (1, 2)) and zero.agrees(None, (2, 2))
    # the same mixtures' expected cost: every fold's mixture costs what was asked (per-model costs are fixed)
    assert np.allclose(zero.at(2.5, cost), 2.5) and np.allclose(zero.at(None, cost), 3.0)
    assert np.allclose(zero.at(0.5, cost), 1.0)  # below the cheapest model: that model
    # a router that mixes A and C at random (quality 0.6 at cost 2.0 and 2.5): behind the table's hull
    picks = np.stack([np.where(rng.random(300) < p, 2, 0) for p in (0.5, 0.75)])
    knobs = np.array([0.2, 0.1])
    in_sample = HullGuard.fit(knobs, picks, correct, cost, folds=0)
    assert in_sample.guarded.all() and set(in_sample.lo) | set(in_sample.hi) >= {1}
    guard = HullGuard.fit(knobs, picks, correct, cost)
    assert not guard.guarded.any()  # the learned rule decides: no mixture of models the folds disagree on
    # B plainly on the hull (0.8 against a chord at 0.6): every fold agrees, and the guard serves the mixture
    plain = correct.copy()
    plain[:, 1] = rng.random(300) < 0.8
    assert HullGuard.fit(knobs, picks, plain, cost).guarded.all()


def test_draw_is_uniform_and_stable():
    u = np.array([draw(f"request-{i}") for i in range(4000)])
    assert draw("x") == draw("x") and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.02 and abs((u < 0.25).mean() - 0.25) < 0.03


# --------------------------------------------------------------------------- per-request cost


def test_cost_model_recovers_prices_and_learns_answer_length():
    rng = np.random.default_rng(0)
    n, d = 800, 12
    X = rng.standard_normal((n, d)).astype(np.float32)
    tin = rng.integers(10, 2000, n).astype(float)
    verbose = np.clip(300 + 120 * X[:, 0] + 60 * X[:, 1], 10, None)  # answer length depends on the prompt
    tout = np.column_stack([verbose, 3 * verbose]) * rng.uniform(0.9, 1.1, (n, 2))
    prices_in, prices_out = np.array([1e-6, 5e-6]), np.array([2e-6, 1.5e-5])
    cost = tin[:, None] * prices_in + tout * prices_out
    cm = CostModel().fit(X[:600], tin[:600], cost[:600], tout[:600])
    assert cm.signal == ["tokens_out", "tokens_out"]
    np.testing.assert_allclose(cm.a, prices_in, rtol=0.05)
    np.testing.assert_allclose(cm.b, prices_out, rtol=0.05)
    pred = cm.predict(X[600:], tin[600:])
    mean_err = np.abs(cost[600:] - cost[:600].mean(axis=0)).mean()
    assert np.abs(pred - cost[600:]).mean() < 0.3 * mean_err  # far better than one price per model
    # only a per-prompt cost (no lengths): learned directly; one price per model: the mean
    direct = CostModel().fit(X[:600], tin[:600], cost[:600])
    assert direct.signal == ["cost", "cost"]
    assert np.abs(direct.predict(X[600:], tin[600:]) - cost[600:]).mean() < 0.5 * mean_err
    flat = CostModel().fit(X, tin, np.tile([0.2, 0.9], (n, 1)))
    assert flat.mode == "mean" and np.allclose(flat.predict(X[:3], tin[:3]), [0.2, 0.9])


def test_router_expected_cost_follows_the_prompt_length():
    # a price-book table: cost = input tokens x price + a fixed answer length x price, exactly recovered
    from tierwise.prices import default_price_book, estimate_tokens

    t = load_table(Path(__file__).resolve().parents[1] / "data/outcomes/routellm.csv.gz")
    t = t.with_source("gsm8k").clean().rows(np.arange(300))
    r = Router("linear").fit(t)
    assert r.cost_model.signal == ["cost", "cost"]
    short, long = "What is 2 + 2?", "What is 2 + 2? " * 200
    extra = estimate_tokens(long) - estimate_tokens(short)
    a, b = r.route(short), r.route(long)
    for j, m in enumerate(r.models):
        price_in = default_price_book().lookup(m)[0].input_per_1m / 1e6
        assert r.cost_model.a[j] == pytest.approx(price_in, rel=1e-3)
        assert b.costs[m] - a.costs[m] == pytest.approx(extra * price_in, rel=1e-3)
    x = r.featurizer.transform(t.prompts[:20])
    np.testing.assert_allclose(r.expected_cost(x, t.prompts[:20]), t.cost[:20], rtol=1e-3)


def test_outchars_columns_give_answer_lengths(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("prompt,correct|a,correct|b,cost|a,cost|b,outchars|a\nhi,1,0,0.1,2,40\nyo,0,1,0.3,2,400\n")
    t = load_table(p)
    out = t.output_tokens()
    assert out[:, 0].tolist() == [10.0, 100.0] and np.isnan(out[:, 1]).all()
    assert t.prompt_tokens().tolist() == [1.0, 1.0]
