"""Router: fit / score / route, knob targets, artifact round-trips, the stand-in, CLI eval/train."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tierwise.router import ArtifactError, Router, conversation_text

REPO = Path(__file__).resolve().parents[1]
GSM = REPO / "data/outcomes/routellm.csv.gz"


@pytest.fixture(scope="module")
def fitted(small_table):
    return Router("ensemble").fit(small_table)


def test_fit_score_route(fitted, small_table):
    q = fitted.score(small_table.prompts[:5])
    assert q.shape == (5, small_table.n_models) and ((q >= 0) & (q <= 1)).all()
    d = fitted.route(small_table.prompts[0])
    assert d.model in small_table.models and d.router == "ensemble"
    assert set(d.scores) == set(small_table.models)
    # knob extremes: 0 = best predicted quality, inf = the cheapest model
    cheapest = small_table.models[int(np.argmin(small_table.mean_cost()))]
    assert fitted.route(small_table.prompts[0], knob=float("inf")).model == cheapest
    best = fitted.route(small_table.prompts[0], knob=0.0)
    assert best.model == max(best.scores, key=best.scores.get)
    only = fitted.route(small_table.prompts[0], allowed=[small_table.models[3]])
    assert only.model == small_table.models[3]


def test_knob_targets_follow_calibration_curve(fitted):
    cal = fitted.calibration
    assert cal["rows"] >= 100 and len(cal["knobs"]) == len(cal["cost"])
    knobs, cost, quality, share = (np.array(cal[k]) for k in ("knobs", "cost", "quality", "top_share"))

    def point(spec):
        return int(np.flatnonzero(knobs == fitted.parse_knob(spec))[0])

    # budget: within budget, and no affordable point has higher quality
    i = point("budget=0.3")
    affordable = cost <= 0.3 * cal["top_cost"] + 1e-15
    assert affordable[i] and quality[i] == quality[affordable].max()
    # share: at most 20% to the dearest model
    assert share[point("share=0.2")] <= 0.2
    # quality: reaches 90% of the best single model, at the least cost that does
    i = point("quality=0.9")
    reach = quality >= 0.9 * cal["best_single_quality"] - 1e-12
    assert reach[i] and cost[i] == cost[reach].min()
    # unreachable quality: the best quality on offer
    assert quality[point("quality=1.5")] == quality.max()
    for bad in ("fast", "quality=", "speed=0.3", "-1", "quality=2", "quality=nan", "share=1.5", "cost=-1"):
        with pytest.raises(ValueError):
            fitted.parse_knob(bad)


def test_artifact_round_trip(fitted, small_table, tmp_path):
    path = fitted.save(tmp_path / "r.tw")
    again = Router.load(path)
    assert again.models == fitted.models and again.kind == "ensemble"
    np.testing.assert_allclose(again.score(small_table.prompts[:50]), fitted.score(small_table.prompts[:50]), rtol=1e-6, atol=1e-6)
    assert again.parse_knob("quality=0.95") == fitted.parse_knob("quality=0.95")
    assert again.metadata["training_data"]["fingerprint"] == small_table.fingerprint()
    with pytest.raises(ValueError, match="trained for models"):
        again.check_models(["a", "b"])


def test_artifact_loads_with_the_encoder_view_it_was_trained_on(small_table, tmp_path):
    # a router trained on the full 256-d table (every artifact from before views) keeps its features
    from tierwise.encoder import StaticEncoder, default_encoder, shipped_encoder
    from tierwise.features import Featurizer

    full = shipped_encoder(StaticEncoder.views()[0])
    assert full is not default_encoder() and full.dim > default_encoder().dim
    old = Router("knn", featurizer=Featurizer(full)).fit(small_table)
    again = Router.load(old.save(tmp_path / "old.tw"))
    assert again.featurizer.encoder is full
    prompts = small_table.prompts[:30]
    np.testing.assert_allclose(again.score(prompts), old.score(prompts), rtol=1e-6, atol=1e-6)
    assert [again.route(p).model for p in prompts] == [old.route(p).model for p in prompts]
    with pytest.raises(ArtifactError, match="retrain"):  # forced onto another view: refused, not misread
        Router.load(tmp_path / "old.tw", featurizer=Featurizer())


def test_artifact_errors(fitted, tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        Router.load(tmp_path / "missing.tw")
    junk = tmp_path / "junk.tw"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a tierwise router artifact"):
        Router.load(junk)
    # an artifact whose encoder fingerprint differs from the installed encoder is refused
    good = fitted.save(tmp_path / "g.tw")
    with zipfile.ZipFile(good) as zf:
        meta = json.loads(zf.read("router.json"))
        arrays = zf.read("arrays.npz")
    meta["metadata"]["features"]["encoder_fingerprint"] = "deadbeef"
    bad = tmp_path / "bad.tw"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("router.json", json.dumps(meta))
        zf.writestr("arrays.npz", arrays)
    with pytest.raises(ArtifactError, match="retrain"):
        Router.load(bad)


def test_stand_in_climbs_with_difficulty():
    r = Router.stand_in(["big", "small", "mid"], [3.0, 1.0, 2.0])
    assert r.models == ["small", "mid", "big"] and r.name == "stand-in:heuristic"
    assert r.route("hi").model == "small"
    hard = "A train leaves at 3 pm going 45 mph; another at 4 pm going 60 mph. " * 12
    assert r.route(hard).model in ("mid", "big")


def test_conversation_text_puts_last_user_turn_first():
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "write python"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "now add tests"}]},
    ]
    assert conversation_text(msgs).split("\n") == ["now add tests", "ok", "write python", "be brief"]
    assert conversation_text([]) == ""


def test_cli_eval_json_and_train(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "eval", str(GSM), "--source", "gsm8k", "--routers", "random,knn",
         "--folds", "3", "--json", "--plot", str(tmp_path / "p.png")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["models"] == ["mixtral-8x7b", "gpt-4-1106"] and data["n"] > 1000
    for name in ("random", "knn", "zero_router", "oracle"):
        assert {"apgr", "cpt50", "cpt80", "cpt95", "aiq"} <= set(data["routers"][name])
    assert data["routers"]["oracle"]["aiq"] > data["routers"]["zero_router"]["aiq"]
    r = data["routers"]  # the share of the oracle's gap closed: 0 at the zero router, 1 at the oracle
    assert r["zero_router"]["gap_closed"] == 0 and r["oracle"]["gap_closed"] == pytest.approx(1)
    zero, oracle = r["zero_router"]["aiq"], r["oracle"]["aiq"]
    assert r["knn"]["gap_closed"] == pytest.approx((r["knn"]["aiq"] - zero) / (oracle - zero))
    assert (tmp_path / "p.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "tierwise.cli", "eval", str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.csv: file not found" in bad.stderr


def test_cli_train_on_another_encoder_view(tmp_path):
    from tierwise.encoder import StaticEncoder

    table = REPO / "data/local/local_pyramid.csv.gz"
    full = StaticEncoder.views()[0]
    out = subprocess.run([sys.executable, "-m", "tierwise.cli", "train", str(table), "--out", str(tmp_path / "r.tw"),
                          "--kind", "knn", "--cv", "0", "--encoder", full], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert Router.load(tmp_path / "r.tw").featurizer.encoder.name == full
    bad = subprocess.run([sys.executable, "-m", "tierwise.cli", "train", str(table), "--out", str(tmp_path / "b.tw"),
                          "--encoder", "nope"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "unknown encoder 'nope'; the shipped encoder has: " + full in bad.stderr
    assert "Traceback" not in bad.stderr


def test_pyramid_target_knob_resolves_on_the_router_calibration(fitted):
    from tierwise.config import Pyramid
    from tierwise.engine.build import default_knob

    models = [{"name": m, "backend": "openai", "endpoint": "http://x/v1", "model": m,
               "input_per_1m": 0.1 * 10 ** i, "output_per_1m": 0.2 * 10 ** i} for i, m in enumerate(fitted.models)]
    p = Pyramid.from_dict({"models": models, "knob": "quality=0.9"})
    assert default_knob(p, fitted) == fitted.parse_knob("quality=0.9")
    with pytest.raises(ValueError, match="no calibration curve"):
        default_knob(p, Router.stand_in(fitted.models, [1.0, 2.0]))


def test_cli_bench_times_repeated_distinct_and_cold_prompts_and_table_sizes():
    out = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "bench", "--table", str(REPO / "data/outcomes/llmrouter_dc.csv.gz"),
         "--iterations", "40", "--rows", "1000,5000", "--rounds", "2", "--json"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["cells"]) == 9 and data["distinct_prompts"] == 50 and data["rounds"] == 2
    for c in data["cells"]:
        assert 0 < c["p50_ms"] <= c["p99_ms"] and 0 < c["distinct_p50_ms"] <= c["distinct_p99_ms"]
        assert c["cold_p50_ms"] > 0
    assert [r["rows"] for r in data["rows"]] == [1000, 5000]
    bad = subprocess.run([sys.executable, "-m", "tierwise.cli", "bench", "--rows", "10,x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--rows" in bad.stderr and "Traceback" not in bad.stderr


def test_route_many_decides_each_row_as_route_does(fitted, small_table):
    # one batch, mixed knobs and candidate sets: every row is what a single decision gives
    prompts = small_table.prompts[:40]
    models = fitted.models
    knobs = [None, 0.0, 0.3, float("inf"), "quality=0.9"] * 8
    allowed = [None, models, models[:2], [models[3]], models[1:]] * 8
    ids = [None, "req-1", None, "req-2", None] * 8
    batch = fitted.route_many(prompts, knobs, allowed, ids)
    for i, d in enumerate(batch):
        one = fitted.route(prompts[i], knobs[i], allowed[i], request_id=ids[i])
        assert (d.model, d.knob, d.guard, d.rule) == (one.model, one.knob, one.guard, one.rule)
        assert d.scores == pytest.approx(one.scores, abs=1e-6) and d.costs == pytest.approx(one.costs, rel=1e-6)
        assert allowed[i] is None or d.model in allowed[i]
    assert fitted.route_many([]) == [] and len(fitted.route_many(prompts[:3])) == 3
    assert fitted.route_batch(prompts[:5], 0.3) == [d.model for d in fitted.route_many(prompts[:5], [0.3] * 5)]
    with pytest.raises(ValueError, match="no allowed model"):
        fitted.route_many(prompts[:2], None, [["nope"], None])


# --------------------------------------------------------------------------- the source member


def _two_source_table(n: int = 400, seed: int = 0):
    """Half the prompts are math (model a right 90%), half poetry (model b right 90%), told apart by words."""
    from tierwise.table import OutcomeTable

    rng = np.random.default_rng(seed)
    first = np.arange(n) < n // 2
    words = ["integral derivative limit sum", "poem sonnet rhyme verse"]
    prompts = [f"{words[0] if f else words[1]} item {i} " + " ".join(rng.choice(list("abcdefgh"), 4)) for i, f in enumerate(first)]
    correct = (rng.random((n, 2)) < np.where(first[:, None], [0.9, 0.1], [0.1, 0.9])).astype(float)
    return OutcomeTable(prompts=prompts, models=["a", "b"], correct=correct, cost=np.tile([1.0, 1.1], (n, 1)),
                        source=np.where(first, "math", "poetry").astype(object), contaminated=np.zeros(n, bool),
                        path="<two sources>", cost_unit="units")


def test_source_quality_learns_the_task_and_each_models_rate_there():
    from tierwise.features import Featurizer
    from tierwise.routers.source import SourceQuality

    t = _two_source_table()
    X = Featurizer().transform(t.prompts)
    q = SourceQuality().fit(X, t.correct, groups=t.source)
    assert q.labels == ["math", "poetry"] and q.W.shape[1] == 2  # the binary case as two columns
    P = q.predict(X)
    math = np.asarray(t.source) == "math"
    assert P[math, 0].mean() > 0.8 and P[math, 1].mean() < 0.2 and P[~math, 1].mean() > 0.8
    # without sources (or one): every prompt gets each model's overall rate
    flat = SourceQuality().fit(X, t.correct, groups=None).predict(X[:3])
    assert np.allclose(flat, t.correct.mean(axis=0))
    # state round trip
    params, arrays = q.get_state()
    assert np.array_equal(SourceQuality.from_state(params, arrays).predict(X[:5]), P[:5])


def test_task_ensemble_uses_the_source_member_only_with_two_sources(tmp_path):
    t = _two_source_table()
    assert Router("ensemble").fit(t).quality.active == [0, 1, 2]  # the default ensemble has no source member
    r = Router("task-ensemble").fit(t)
    assert r.quality.active == [0, 1, 2, 3]
    loaded = Router.load(r.save(tmp_path / "two.tw"))
    assert loaded.quality.active == [0, 1, 2, 3]
    assert loaded.route("integral derivative limit sum item 7 a b c d").model == r.route("integral derivative limit sum item 7 a b c d").model
    one = Router("task-ensemble").fit(t.with_source("math"))  # one source left: the member is left out
    assert one.quality.active == [0, 1, 2]


def test_cli_train_auto_tries_the_task_ensemble_only_with_sources(tmp_path):
    t = _two_source_table(n=200)
    import pandas as pd

    frame = pd.DataFrame({"prompt": t.prompts, "source": t.source,
                          **{f"correct|{m}": t.correct[:, j] for j, m in enumerate(t.models)},
                          **{f"cost|{m}": t.cost[:, j] for j, m in enumerate(t.models)}})
    frame.to_csv(tmp_path / "two.csv", index=False)
    frame.assign(source="one").to_csv(tmp_path / "one.csv", index=False)
    for name, tried in (("two", True), ("one", False)):
        out = subprocess.run([sys.executable, "-m", "tierwise.cli", "train", str(tmp_path / f"{name}.csv"), "--out",
                              str(tmp_path / f"{name}.tw"), "--kind", "auto"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "COLUMNS": "200"})  # rich wraps its log lines at the terminal width
        assert out.returncode == 0, out.stderr
        assert ("task-ensemble" in " ".join(out.stderr.split())) == tried


def test_per_source_reference_uses_the_task_routers_sources():
    """``evaluate``'s 'zero_router per source' and the task router read sources by one rule: small ones pooled."""
    import dataclasses

    from tierwise.evaluate import ZERO_PER_SOURCE, evaluate, routers_for

    t = _two_source_table()
    rep = evaluate(t, ["knn"], folds=3, guard=False)
    assert rep.routers[ZERO_PER_SOURCE]["aiq"] > rep.routers["zero_router"]["aiq"]  # math -> a, poetry -> b
    # 40 one-row sources beside the two big ones: pooled, the reference is the same
    noisy = dataclasses.replace(t, source=np.array([s if i >= 40 else f"tiny{i}" for i, s in enumerate(t.source)],
                                                   dtype=object))
    again = evaluate(noisy, ["knn"], folds=3, guard=False).routers[ZERO_PER_SOURCE]["aiq"]
    assert again == pytest.approx(rep.routers[ZERO_PER_SOURCE]["aiq"], abs=0.02)
    assert "task-ensemble" in routers_for(noisy)
    # only sources too small to learn: no reference, and no task router
    tiny = dataclasses.replace(t, source=np.array([f"s{i % 50}" for i in range(len(t))], dtype=object))
    assert ZERO_PER_SOURCE not in evaluate(tiny, ["knn"], folds=3, guard=False).routers
    assert "task-ensemble" not in routers_for(tiny)


# --------------------------------------------------------------------------- CLI input checks (QA pass)


def _cli(*args: str):
    """``tierwise ARGS`` in process: (exit code, stdout + stderr)."""
    from typer.testing import CliRunner

    from tierwise.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception  # never a traceback
    return res.exit_code, res.output


def _write_table(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A small 3-model outcome CSV (cheap, mid, dear) whose prompts say which model they need."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    level = rng.integers(0, 3, n)
    words = ["easy hello short", "medium sum numbers", "hard integral proof theorem"]
    prompts = [f"{words[lv]} item {i} " + " ".join(rng.choice(list("abcdefgh"), 4)) for i, lv in enumerate(level)]
    frame = {"prompt": prompts}
    for j, (m, c) in enumerate((("cheap", 1.0), ("mid", 3.0), ("dear", 9.0))):
        frame[f"correct|{m}"] = ((level <= j) | (rng.random(n) < 0.1)).astype(float)
        frame[f"cost|{m}"] = c * (1 + 0.1 * rng.random(n))
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def _rewrite_artifact(src: Path, dst: Path, edit) -> Path:
    """A copy of a router artifact with ``edit(meta, arrays)`` applied to its JSON and arrays."""
    import io

    with zipfile.ZipFile(src) as zf:
        meta = json.loads(zf.read("router.json"))
        arrays = dict(np.load(io.BytesIO(zf.read("arrays.npz"))))
    edit(meta, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("router.json", json.dumps(meta))
        zf.writestr("arrays.npz", buf.getvalue())
    return dst


def test_non_finite_knobs_and_targets_are_refused(fitted, tmp_path):
    for bad in ("nan", "inf", "-inf", "NaN", "1e999"):
        with pytest.raises(ValueError, match="not a finite number"):
            fitted.parse_knob(bad)
    from tierwise.router import check_knob

    for bad in ("nan", "inf"):
        with pytest.raises(ValueError, match="not a finite number"):
            check_knob(bad)
    assert check_knob("0.3") == 0.3 and check_knob("quality=0.9") is None
    assert fitted.route(fitted.models[0], knob=float("inf")).model  # a float inf is still "always the cheapest"
    table = _write_table(tmp_path / "t.csv")
    for target in ("nan", "inf"):  # refused before any work: no artifact, exit 2
        code, out = _cli("train", table, "--out", tmp_path / "r.tw", "--cv", "0", "--target", target)
        assert code == 2 and "--target: knob" in out and "not a finite number" in out, out
        assert not (tmp_path / "r.tw").exists() and "encoding" not in out
    path = fitted.save(tmp_path / "f.tw")
    for knob in ("nan", "inf"):
        code, out = _cli("route", path, "hello", "--knob", knob)
        assert code == 2 and "--knob: knob" in out and "not a finite number" in out, out
    # a target resolved at the curve's end ("always the cheapest") is printed as strict JSON
    fitted.default_knob = float("inf")
    code, out = _cli("route", fitted.save(tmp_path / "cheapest.tw"), "hello")
    assert code == 0 and json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))["knob"] == "inf"


def test_cli_train_cv_must_be_zero_or_two_or_more(tmp_path):
    table = _write_table(tmp_path / "t.csv")
    for cv in ("1", "-1"):
        code, out = _cli("train", table, "--out", tmp_path / "r.tw", "--cv", cv)
        assert code == 2 and f"--cv {cv}: give 0 (no cross-validation) or 2 or more folds" in out, out
    assert not (tmp_path / "r.tw").exists()


def test_cli_output_paths_are_checked_before_the_work_and_parents_created(fitted, tmp_path):
    table = _write_table(tmp_path / "t.csv")
    (tmp_path / "adir.tw").mkdir()
    code, out = _cli("train", table, "--out", tmp_path / "adir.tw", "--cv", "0")
    assert code == 2 and "adir.tw: is a directory" in out and "encoding" not in out, out
    assert not (tmp_path / "adir.tw.tmp").exists()
    code, out = _cli("train", table, "--out", tmp_path / "new" / "sub" / "r.tw", "--cv", "0")
    assert code == 0, out
    assert Router.load(tmp_path / "new" / "sub" / "r.tw").models == ["cheap", "mid", "dear"]
    assert not list((tmp_path / "new" / "sub").glob("*.tmp"))
    # the library: a directory refused, a failed write leaves no .tmp behind
    with pytest.raises(ArtifactError, match="is a directory"):
        fitted.save(tmp_path / "adir.tw")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        fitted.save(tmp_path / "file" / "r.tw")
    # eval: the plot's format and folder are checked before the cross-validation
    for plot, msg in (("e.xyz", "unsupported image format 'xyz'"), ("adir.tw", "is a directory")):
        code, out = _cli("eval", table, "--folds", "2", "--routers", "knn", "--plot", tmp_path / plot)
        assert code == 2 and msg in out and "cross-validating" not in out, out
    code, out = _cli("eval", table, "--folds", "2", "--routers", "knn", "--guard", "--cost", "request", "--json",
                     "--plot", tmp_path / "plots" / "e.png")
    assert code == 0 and (tmp_path / "plots" / "e.png").stat().st_size > 1000, out
    code, out = _cli("eval", table, "--folds", "2", "--routers", "knn", "--plot", tmp_path / "bare")
    assert code == 0 and "bare.png" in out and (tmp_path / "bare.png").is_file(), out  # the file it says it wrote


def test_damaged_artifacts_fail_at_load_naming_the_file(fitted, tmp_path):
    good = fitted.save(tmp_path / "good.tw")
    data = bytearray(good.read_bytes())
    for i in range(0x40, 0x80):  # inside router.json's deflated bytes
        data[i] ^= 0xFF
    (tmp_path / "flipped.tw").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="flipped.tw: .*damaged"):
        Router.load(tmp_path / "flipped.tw")

    def fewer_models(meta, arrays):
        meta["models"], meta["costs"] = meta["models"][:-1], meta["costs"][:-1]

    with pytest.raises(ArtifactError, match="fewer.tw: damaged router artifact: 8 models but the cost model"):
        Router.load(_rewrite_artifact(good, tmp_path / "fewer.tw", fewer_models))

    def fewer_models_mean_cost(meta, arrays):  # no cost model (version 1 style): the quality model's width
        fewer_models(meta, arrays)
        meta["cost_model"] = None

    with pytest.raises(ArtifactError, match="v1.tw: damaged router artifact: 8 models but the quality model predicts 9"):
        Router.load(_rewrite_artifact(good, tmp_path / "v1.tw", fewer_models_mean_cost))
    with pytest.raises(ArtifactError, match=r"nocost.tw: damaged router artifact: the calibration curve lacks \['cost'\]"):
        Router.load(_rewrite_artifact(good, tmp_path / "nocost.tw", lambda meta, arrays: meta["calibration"].pop("cost")))

    def short_curve(meta, arrays):
        meta["calibration"]["quality"] = meta["calibration"]["quality"][:-3]

    with pytest.raises(ArtifactError, match="short.tw: .*'quality'.*one value per knob"):
        Router.load(_rewrite_artifact(good, tmp_path / "short.tw", short_curve))
    code, out = _cli("route", tmp_path / "nocost.tw", "hello", "--knob", "quality=0.9")
    assert code == 2 and out.count("\n") == 1 and "nocost.tw: damaged router artifact" in out, out
    assert Router.load(_rewrite_artifact(good, tmp_path / "same.tw", lambda meta, arrays: None)).models == fitted.models


def test_best_single_model_is_the_best_on_the_whole_table_not_on_the_holdout():
    """After training without CV the curve is measured on a 20% holdout; the incumbent --add-model compares a new
    model with is the best model on every training row, whichever model was lucky on the holdout."""
    from tierwise.onboarding import recorded_incumbent
    from tierwise.table import OutcomeTable

    n = 200
    hold = np.random.default_rng(0).permutation(n)[: int(n * 0.2)]  # the rows Router.fit holds out (seed 0)
    correct = np.zeros((n, 2))
    correct[:, 1] = 1.0  # "good" is right everywhere but on the holdout
    correct[hold] = [1.0, 0.0]  # where "weak" is right and "good" wrong
    rng = np.random.default_rng(1)
    t = OutcomeTable(prompts=[f"prompt {i} " + " ".join(rng.choice(list("abcdefgh"), 4)) for i in range(n)],
                     models=["weak", "good"], correct=correct, cost=np.tile([1.0, 2.0], (n, 1)),
                     source=np.array(["s"] * n, dtype=object), contaminated=np.zeros(n, bool), path="<holdout>",
                     cost_unit="units")
    r = Router("prior").fit(t)
    assert r.calibration["method"] == "20% holdout" and r.calibration["rows"] == len(hold)
    assert r.calibration["best_single_model"] == "good" == recorded_incumbent(r)
    assert r.calibration["best_single_quality"] == 1.0  # the curve's own reference stays the holdout's
    oof = np.tile(correct.mean(axis=0), (n, 1))  # with cross-validated predictions: the same incumbent
    assert Router("prior").fit(t, oof=oof).calibration["best_single_model"] == "good"


def test_cli_bench_options_are_checked(tmp_path):
    table = _write_table(tmp_path / "ok.csv")
    for args, msg in ((("--iterations", "0"), "--iterations"), (("--iterations", "-3"), "--iterations"),
                      (("--kind", "foo"), "--kind: unknown router kind 'foo'")):
        code, out = _cli("bench", "--table", table, "--rows", "", "--rounds", "1", *args)
        assert code == 2 and msg in out, out
    _write_table(tmp_path / "t.csv", n=3)
    code, out = _cli("bench", "--table", tmp_path / "t.csv", "--rows", "")
    assert code == 2 and "t.csv: only 3 usable rows" in out, out


def test_cli_help_and_examples_agree_with_the_options():
    code, out = _cli("route", "--help")
    assert code == 0 and "see `tierwise train --help`" not in out and "budget=0.5" in " ".join(out.split())
    pyramid = (REPO / "examples/pyramid.yaml").read_text()
    assert " -o router.json" not in pyramid and "--out router.tw" in pyramid


def test_cli_options_are_checked_before_the_table_is_read_or_cross_validated(fitted, tmp_path):
    table = _write_table(tmp_path / "t.csv")
    code, out = _cli("train", table, "--out", tmp_path / "r.tw", "--target", "foo")
    assert code == 2 and "--target: cannot read knob 'foo'" in out and "cross-validation" not in out, out
    code, out = _cli("eval", table, "--routers", "knn,foo")
    assert code == 2 and "--routers: unknown router kind 'foo'" in out and "cross-validating" not in out, out
    code, out = _cli("eval", table, "--rule", "nope")
    assert code == 2 and "--rule 'nope'" in out, out
    typo = tmp_path / "typo" / "log.sqlite"
    code, out = _cli("train", table, "--out", tmp_path / "r.tw", "--feedback", typo)
    assert code == 2 and "decision log not found" in out, out
    assert not typo.exists() and not typo.parent.exists()
