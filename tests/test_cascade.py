"""Cascade: offline simulation/calibration on graded tables, and the online router on real models."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest

from tierwise.backends.base import Backend, BackendError
from tierwise.cascade import (
    SKIP,
    CascadeError,
    Thresholds,
    calibrate,
    cascade_curve,
    cascade_cv_curve,
    load_cascade_table,
    parse_target,
    simulate,
)
from tierwise.table import TableError


def _write(tmp_path, rows: dict, name="t.csv"):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_simulate_by_hand(tmp_path):
    # two models; small pays 1, big pays 10 per request
    p = _write(tmp_path, {
        "prompt": ["a", "b", "c", "d"],
        "correct|small": [1, 0, 1, 0],
        "correct|big": [1, 1, 0, 1],
        "cost|small": [1.0] * 4,
        "cost|big": [10.0] * 4,
        "logprob|small": [-0.1, -2.0, -0.5, -0.2],
        "logprob|big": [-0.3] * 4,
    })
    t = load_cascade_table(p)
    assert t.models == ["small", "big"]
    # threshold -0.3: rows a, d kept at small (conf -0.1, -0.2), rows b, c escalate to big
    cost, quality = simulate(t, {"small": -0.3})
    assert cost == pytest.approx((1 + 11 + 11 + 1) / 4)
    assert quality == pytest.approx((1 + 1 + 0 + 0) / 4)
    # accept everything at small: small's own numbers
    assert simulate(t, [-math.inf]) == (pytest.approx(1.0), pytest.approx(0.5))
    # skip small entirely: exactly the big model, small is never paid
    assert simulate(t, {"small": None}) == (pytest.approx(10.0), pytest.approx(0.75))
    # threshold above every confidence: small is called, then always escalates (pays both)
    assert simulate(t, [0.5]) == (pytest.approx(11.0), pytest.approx(0.75))


def _synthetic(tmp_path, n=600, seed=1):
    """Three models whose log-probability really predicts being right, as in collected tables."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, n)
    rows = {"prompt": [f"q{i}" for i in range(n)], "source": ["s"] * n}
    for name, skill, price in (("s", 0.35, 1e-6), ("m", 0.6, 5e-6), ("l", 0.85, 2e-5)):
        correct = (difficulty < skill + rng.normal(0, 0.05, n)).astype(float)
        rows[f"correct|{name}"] = correct
        rows[f"cost|{name}"] = price * rng.uniform(0.8, 1.2, n)
        rows[f"logprob|{name}"] = -(difficulty / skill) + rng.normal(0, 0.1, n)
    return _write(tmp_path, rows, "synth.csv")


def test_a_one_model_table_is_refused(tmp_path):
    """It wrote a thresholds file with no thresholds ('wrote cq.json: ')."""
    t = load_cascade_table(_synthetic(tmp_path)).with_models(["l"])
    with pytest.raises(CascadeError, match="at least two models"):
        calibrate(t, "quality=0.95")


def test_calibrate_hits_quality_target_cheaper_than_top(tmp_path):
    t = load_cascade_table(_synthetic(tmp_path))
    top_q = t.correct[:, -1].mean()
    top_c = t.cost[:, -1].mean()
    th = calibrate(t, "quality=0.95")
    cost, quality = simulate(t, th)
    assert quality >= 0.95 * top_q - 1e-9
    assert cost < top_c  # the whole point: same quality target for less money
    assert th.meta["expected_cost_usd"] == pytest.approx(cost)
    # a looser target is never more expensive
    loose = calibrate(t, "quality=0.8")
    assert simulate(t, loose)[0] <= cost + 1e-15
    # cost target: best quality within the budget
    budget = float(t.cost[:, 0].mean() * 3)
    cheap = calibrate(t, f"cost={budget}")
    c2, q2 = simulate(t, cheap)
    assert c2 <= budget and q2 > t.correct[:, 0].mean()
    with pytest.raises(CascadeError, match="below the cheapest cascade"):
        calibrate(t, "cost=1e-12")
    with pytest.raises(CascadeError, match="best cascade"):
        calibrate(t, "quality=1.4")


def test_cascade_curve_is_a_frontier_with_the_pure_models_as_bounds(tmp_path):
    t = load_cascade_table(_synthetic(tmp_path))
    curve = cascade_curve(t)
    costs = [c for c, _ in curve]
    quals = [q for _, q in curve]
    assert costs == sorted(costs) and quals == sorted(quals)
    # cheapest point: the small model alone; best point reaches at least the top model's quality
    assert costs[0] == pytest.approx(t.cost[:, 0].mean())
    assert quals[-1] >= t.correct[:, -1].mean() - 1e-12
    assert len(curve) >= 5
    # held-out: thresholds fitted on half, measured on the other half
    half = np.arange(len(t)) % 2 == 0
    held = cascade_curve(t.rows(~half), fit=t.rows(half))
    assert len(held) >= 3 and all(0 <= q <= 1 for _, q in held)


def test_cascade_cv_curve_is_held_out_and_within_bounds(tmp_path):
    t = load_cascade_table(_synthetic(tmp_path))
    cv = cascade_cv_curve(t, folds=5)
    costs, quals = np.array(cv).T
    single_c = t.cost.mean(axis=0)
    assert len(cv) == 24 and np.all(np.diff(costs) >= 0)
    assert costs.min() >= single_c.min() * 0.999 and costs.max() <= single_c.sum() * 1.001
    # tight budgets stay near the small model, loose ones get near the top model
    assert quals[0] < t.correct[:, 0].mean() + 0.05 and quals[-1] > t.correct[:, -1].mean() - 0.05
    # mid budgets mix models: better than the small model, cheaper than the top one
    mid = (costs > single_c[0] * 1.5) & (costs < single_c[-1])
    assert mid.any() and quals[mid].max() > t.correct[:, 1].mean()
    with pytest.raises(CascadeError, match="usable rows"):
        cascade_cv_curve(t.rows(np.arange(10)), folds=5)


def test_cli_eval_places_the_cascade_beside_the_routers(tmp_path):
    import subprocess
    import sys

    table = _synthetic(tmp_path, n=200)
    out = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "eval", str(table), "--routers", "random,knn", "--folds", "3",
         "--cascade", "--json", "--plot", str(tmp_path / "p.png")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    routers = json.loads(out.stdout)["routers"]
    casc = routers["cascade (logprob)"]
    # logprob really predicts success in this table: the cascade beats mixing single models
    assert casc["aiq"] > routers["zero_router"]["aiq"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
    # the table view says that on 200 rows the count of knobs under the zero router is noise
    shown = subprocess.run([sys.executable, "-m", "tierwise.cli", "eval", str(table), "--routers", "knn", "--folds", "3"],
                           capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr
    assert "On 200 prompts '<zero' is mostly noise" in " ".join(shown.stdout.split())


def test_thresholds_roundtrip_and_errors(tmp_path):
    th = Thresholds(["a", "b", "c"], [-0.4, SKIP], meta={"target": "quality=0.9"})
    for name in ("c.json", "c.yaml"):
        back = Thresholds.load(th.save(tmp_path / name))
        assert back.models == th.models and back.values == th.values and back.meta == th.meta
    assert json.loads((tmp_path / "c.json").read_text())["thresholds"]["b"] is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": ["a", "b"], "thresholds": {"a": "high"}}))
    with pytest.raises(CascadeError, match="thresholds.a: must be a number or null"):
        Thresholds.load(bad)
    bad.write_text(json.dumps({"models": ["a", "b"], "thresholds": {}}))
    with pytest.raises(CascadeError, match="thresholds.a: missing"):
        Thresholds.load(bad)
    bad.write_text("{not json")
    with pytest.raises(CascadeError, match="cannot be parsed"):
        Thresholds.load(bad)
    with pytest.raises(CascadeError, match="calibrates to 'quality=FRACTION'"):
        parse_target("share=0.3")
    assert parse_target("quality=0.95") == ("quality", 0.95)


def test_table_without_logprob_is_refused(tmp_path):
    p = _write(tmp_path, {"prompt": ["a"], "correct|x": [1], "correct|y": [0], "cost|x": [1.0], "cost|y": [2.0]})
    with pytest.raises(TableError, match="logprob\\|x"):
        load_cascade_table(p)


def test_cli_calibrate_and_simulate(tmp_path):
    from typer.testing import CliRunner

    from tierwise.cli import app

    table = _synthetic(tmp_path)
    out = tmp_path / "cascade.json"
    r = CliRunner().invoke(app, ["cascade", "calibrate", str(table), "--target", "quality=0.9", "--out", str(out)])
    assert r.exit_code == 0, r.output
    th = Thresholds.load(out)
    assert th.models == ["s", "m", "l"]
    r2 = CliRunner().invoke(app, ["cascade", "simulate", str(table), "--thresholds", str(out)])
    assert r2.exit_code == 0 and f"{th.meta['expected_quality']:.4f}" in r2.output
    r3 = CliRunner().invoke(app, ["cascade", "calibrate", str(tmp_path / "nope.csv")])
    assert r3.exit_code == 2 and "file not found" in r3.output
    (tmp_path / "adir.json").mkdir()  # an output path that is a directory: said before the work, no traceback
    r4 = CliRunner().invoke(app, ["cascade", "calibrate", str(table), "--out", str(tmp_path / "adir.json")])
    assert r4.exit_code == 2 and "is a directory" in r4.output


# ------------------------------------------------------------------------------------------
# the online cascade (engine strategy) on real local models


class _Broken(Backend):
    """Fault injection only: a backend that is down."""

    name, context_window = "broken", 4096

    async def complete(self, body, **kw):
        raise BackendError("broken", "connection refused")

    def stream(self, body, **kw):  # pragma: no cover - never reached
        raise BackendError("broken", "connection refused")


@pytest.fixture(scope="module")
def real_pyramid():
    pytest.importorskip("llama_cpp")
    from tierwise.backends import build_backend
    from tierwise.config import Pyramid, default_pyramid

    pyr = default_pyramid()
    small, mid = pyr.models[0], pyr.models[1]
    try:
        backends = {small.name: build_backend(small), mid.name: build_backend(mid)}
    except Exception as exc:  # weights packages not installed on this machine
        pytest.skip(f"embedded models unavailable: {exc}")
    two = Pyramid.from_dict({"models": [small.model_dump(), mid.model_dump()], "log": ":memory:"})
    return two, backends


def _engine(real_pyramid, values, backends=None):
    from tierwise.engine import Engine

    pyr, real = real_pyramid
    th = Thresholds(pyr.names, values)
    return Engine.from_pyramid(pyr, backends={**real, **(backends or {})}, cascade=th, cascade_default=True)


MSG = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
BODY = {"model": "tierwise:cascade", "messages": MSG, "max_tokens": 8}


@pytest.mark.slow
def test_cascade_keeps_or_escalates_on_real_models(real_pyramid):
    small, big = real_pyramid[0].names
    r = asyncio.run(_engine(real_pyramid, [-math.inf]).chat(dict(BODY))).record
    assert r.model == small and [s["outcome"] for s in r.cascade_chain] == ["kept"]
    assert r.cascade_chain[0]["confidence"] is not None and r.cascade_chain[0]["confidence"] <= 0  # a real mean logprob
    slot = _engine(real_pyramid, [-math.inf]).by_name[small]
    assert r.cost_usd == pytest.approx(slot.cost(r.tokens_in, r.tokens_out))

    a = asyncio.run(_engine(real_pyramid, [0.5]).chat(dict(BODY)))  # log-probs are <= 0: always escalate
    r = a.record
    assert r.model == big and [s["model"] for s in r.cascade_chain] == [small, big]
    assert [s["outcome"] for s in r.cascade_chain] == ["escalated", "kept"]
    assert "paris" in a.body["choices"][0]["message"]["content"].lower()
    assert a.body["choices"][0]["logprobs"] is None  # asked of the lower model only, never returned unasked
    assert r.tokens_in == sum(s["tokens_in"] for s in r.cascade_chain) >= 2 * 10  # escalating pays for both

    r = asyncio.run(_engine(real_pyramid, [SKIP]).chat(dict(BODY))).record
    assert [s["model"] for s in r.cascade_chain] == [big]


@pytest.mark.slow
def test_cascade_stream_only_streams_the_kept_answer(real_pyramid):
    small, big = real_pyramid[0].names

    async def collect(values):
        s = await _engine(real_pyramid, values).chat_stream({**BODY, "stream": True})
        return [c async for c in s], s.record

    chunks, rec = asyncio.run(collect([0.5]))
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert {c["model"] for c in chunks} == {big} and rec.model == big
    assert chunks[-1]["tierwise"]["chain"].startswith(f"{small}:")  # the finishing chunk carries the chain
    direct = asyncio.run(_engine(real_pyramid, [0.5]).chat({**BODY, "model": big}))
    assert text.strip() == direct.body["choices"][0]["message"]["content"].strip()  # the small answer never leaked

    chunks, rec = asyncio.run(collect([-math.inf]))
    assert rec.model == small and {c["model"] for c in chunks} == {small}
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 1  # one piece


@pytest.mark.slow
def test_cascade_escalates_past_a_failing_model(real_pyramid):
    small, big = real_pyramid[0].names
    r = asyncio.run(_engine(real_pyramid, [-math.inf], {small: _Broken()}).chat(dict(BODY))).record
    assert r.model == big and [(s["model"], s["outcome"]) for s in r.cascade_chain] == [(small, "error"), (big, "kept")]
    assert r.fallbacks[0]["model"] == small
