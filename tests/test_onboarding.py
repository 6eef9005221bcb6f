"""Placing a new model into a trained router from a few probe outcomes (``tierwise train --add-model``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tierwise.onboarding import add_model, select
from tierwise.router import Router
from tierwise.routers.probe import place, select_probes, sigmoid
from tierwise.table import load_table

REPO = Path(__file__).resolve().parents[1]
DC = REPO / "data/outcomes/llmrouter_dc.csv.gz"
NEW = "llama-3.1-8b-instruct"


def test_place_recovers_a_model_that_follows_a_known_one():
    rng = np.random.default_rng(0)
    L = rng.normal(0, 1.5, (3000, 4))
    true = sigmoid(1.8 * L[:, 2] - 0.5)  # the new model behaves like known model 2, sharper and weaker
    y = (rng.random(3000) < true).astype(float)
    few = place(L[:10], y[:10])
    many = place(L[:300], y[:300])
    err = lambda wb: np.abs(sigmoid(L[300:] @ wb[0] + wb[1]) - true[300:]).mean()  # noqa: E731
    constant = np.abs(y[:300].mean() - true[300:]).mean()
    assert err(many) < 0.5 * constant and err(many) < err(few)
    assert np.argmax(many[0]) == 2  # it found which model the new one resembles
    assert err(few) < constant  # ten probes already beat knowing only the average


def test_select_probes_returns_k_distinct_prompts_in_a_nested_order():
    rng = np.random.default_rng(1)
    P = sigmoid(rng.normal(0, 1, (500, 5)))
    a, b = select_probes(P, 10), select_probes(P, 30)
    assert len(set(a.tolist())) == 10 and len(set(b.tolist())) == 30
    assert a.tolist() == b[:10].tolist()  # a prefix is the best smaller set
    assert len(select_probes(P[:7], 30)) == 7


def test_select_probes_when_candidates_repeat():
    """Many identical candidates (a kNN router predicts the same on near prompts) leave k-means clusters
    empty: the selection still returns k distinct prompts, one per kind first."""
    rng = np.random.default_rng(2)
    kinds = sigmoid(rng.normal(0, 1, (6, 3)))
    P = kinds[rng.integers(0, 6, 300)]
    picks = select_probes(P, 50)
    assert len(set(picks.tolist())) == 50
    assert len({tuple(row) for row in P[picks[:6]]}) == 6  # the first six probes: one of each kind


@pytest.fixture(scope="module")
def split():
    t = load_table(DC).clean()
    base = t.with_models([m for m in t.models if m != NEW]).rows(np.arange(800))
    return base, t.rows(np.arange(800, 1400))


def test_add_model_places_it_and_survives_the_artifact(split, tmp_path):
    base, pool = split
    router = Router("knn").fit(base)
    picked = select(router, pool.prompts, 30)
    probes = pool.rows(picked)
    summary = add_model(router, probes, NEW)
    assert router.models[-1] == NEW and summary["probes"] == 30 and router.guard is None
    assert "stale" in router.calibration and router.name == "knn+probed"
    q = router.score(pool.prompts[:200])
    assert q.shape == (200, 9) and np.isfinite(q).all() and q[:, -1].std() > 0.01  # depends on the prompt
    # its mean prediction on unseen prompts stays near what the probes showed (the ability is fitted)
    rest = np.setdiff1d(np.arange(len(pool)), picked)
    cautious = router.score([pool.prompts[i] for i in rest])[:, -1]
    router.quality.caution = 0.0  # the posterior mean
    pred = router.score([pool.prompts[i] for i in rest])[:, -1]
    router.quality.caution = 1.0
    assert abs(pred.mean() - probes.correct[:, pool.models.index(NEW)].mean()) < 0.1
    # the router decides on a lower bound of the placed model's quality, never above its mean
    assert np.all(cautious <= pred + 1e-12) and (pred - cautious).mean() > 0.005
    again = Router.load(router.save(tmp_path / "p.tw"))
    np.testing.assert_allclose(again.score(pool.prompts[:20]), router.score(pool.prompts[:20]), atol=1e-6)
    assert again.route(pool.prompts[0]).model in again.models
    with pytest.raises(ValueError, match="already has"):
        add_model(again, probes, NEW)


def test_cli_probe_select_and_train_add_model(split, tmp_path):
    base, pool = split
    router = Router("knn").fit(base)
    router.save(tmp_path / "base.tw")
    incumbent = router.calibration["best_single_model"]
    pool_csv = tmp_path / "pool.csv"
    import pandas as pd

    columns = {"prompt": pool.prompts, f"correct|{NEW}": pool.correct[:, pool.models.index(NEW)],
               f"cost|{NEW}": pool.cost[:, pool.models.index(NEW)]}
    pd.DataFrame(columns).to_csv(pool_csv, index=False)
    cli = [sys.executable, "-m", "tierwise.cli"]
    sel = subprocess.run(cli + ["probe", "select", str(tmp_path / "base.tw"), str(pool_csv), "-k", "12"],
                         capture_output=True, text=True, timeout=300)
    assert sel.returncode == 0, sel.stderr
    assert f"grade {incumbent} (correct|{incumbent}) on them too" in sel.stderr
    # a pool that grades the incumbent (e.g. the training table): the probes carry its outcomes along
    columns[f"correct|{incumbent}"] = pool.correct[:, pool.models.index(incumbent)]
    pd.DataFrame(columns).to_csv(tmp_path / "pool2.csv", index=False)
    sel2 = subprocess.run(cli + ["probe", "select", str(tmp_path / "base.tw"), str(tmp_path / "pool2.csv"), "-k", "12",
                                 "--out", str(tmp_path / "probes2.jsonl")], capture_output=True, text=True, timeout=300)
    assert sel2.returncode == 0 and f"the probes carry correct|{incumbent}" in sel2.stderr
    add2 = subprocess.run(cli + ["train", "--router", str(tmp_path / "base.tw"), "--add-model", NEW, "--probe",
                                 str(tmp_path / "probes2.jsonl"), "--out", str(tmp_path / "new2.tw")],
                          capture_output=True, text=True, timeout=300)
    assert add2.returncode == 0, add2.stderr
    rule = json.loads(add2.stdout)["best_quality_knob"]
    assert rule["incumbent"] == incumbent and rule["probes"] == 12 and "why_not" not in rule
    rows = [json.loads(line) for line in sel.stdout.splitlines()]
    assert len(rows) == 12 and [r["probe_rank"] for r in rows] == list(range(12))
    pd.DataFrame(rows).to_csv(tmp_path / "graded.csv", index=False)
    out = subprocess.run(cli + ["train", "--router", str(tmp_path / "base.tw"), "--add-model", NEW, "--probe",
                                str(tmp_path / "graded.csv"), "--out", str(tmp_path / "new.tw")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["probes"] == 12 and Router.load(tmp_path / "new.tw").models[-1] == NEW
    bad = subprocess.run(cli + ["train", "--add-model", NEW, "--out", str(tmp_path / "x.tw")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--router" in bad.stderr


def test_the_placement_posterior_narrows_with_more_probes():
    from tierwise.routers.probe import cautious_logits, place_posterior

    rng = np.random.default_rng(0)
    L = rng.normal(size=(400, 6))
    y = (rng.random(400) < sigmoid(0.3 + L[:, 1])).astype(float)
    widths = []
    for k in (10, 30, 100, 400):
        w, b, S = place_posterior(L[:k], y[:k])
        assert S.shape == (7, 7) and np.allclose(S, S.T) and np.linalg.eigvalsh(S).min() > -1e-9
        mean = L @ w + b
        low = cautious_logits(L, w[None], np.array([b]), S[None], 1.0)[:, 0]
        assert np.all(low <= mean) and np.allclose(cautious_logits(L, w[None], np.array([b]), S[None], 0.0)[:, 0], mean)
        widths.append(float((mean - low).mean()))
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 3


def test_probed_artifacts_from_before_the_posterior_load_without_caution(split):
    from tierwise.routers.probe import ProbedQuality

    base, pool = split
    router = Router("knn").fit(base)
    add_model(router, pool.rows(np.arange(30)), NEW)
    params, arrays = router.quality.get_state()
    old = ProbedQuality.from_state({k: v for k, v in params.items() if k != "caution"},
                                   {k: v for k, v in arrays.items() if k != "S"})
    X = router.featurizer.transform(pool.prompts[:20])
    mean = router.quality
    mean.caution = 0.0
    np.testing.assert_allclose(old.predict(X), mean.predict(X), atol=1e-9)


def test_beats_incumbent_is_a_paired_test_on_the_probes():
    from tierwise.onboarding import beats_incumbent

    new, old = np.array([1, 1, 0, 1, 0, 1.0]), np.array([1, 0, 0, 1, 0, 0.0])
    assert beats_incumbent(new, old) and not beats_incumbent(old, new) and not beats_incumbent(new, new)
    assert not beats_incumbent(new, old, z=3.0)  # +2 of 6 is not 3 standard errors
    assert not beats_incumbent(np.array([]), np.array([]))


@pytest.fixture(scope="module")
def shuffled():
    t = load_table(DC).clean()
    perm = np.random.default_rng(0).permutation(len(t))
    return t, np.sort(perm[:800]), np.sort(perm[800:1400])


def test_a_new_model_better_than_the_incumbent_takes_the_best_quality_knob(shuffled, tmp_path):
    # the table's best model (nemotron-51b, 0.617) is the new one; the probe table grades every model, so the
    # new model is compared with the router's best known model on the same prompts: the best on the whole
    # training table (nemotron-super-49b, 0.573), which the new model beats on 200 probes (0.586 vs 0.543; on
    # the first 50 the incumbent was ahead, 0.533 vs 0.657)
    t, base_rows, pool_rows = shuffled
    best, weak = "llama-3.1-nemotron-51b-instruct", "codegemma-7b"
    router = Router("knn").fit(t.with_models([m for m in t.models if m not in (best, weak)]).rows(base_rows))
    pool = t.rows(pool_rows)
    incumbent = router.calibration["best_single_model"]
    assert incumbent == "llama-3.3-nemotron-super-49b-v1"  # the whole table's, not the 20% holdout's
    probes = pool.rows(select(router, pool.prompts, 200))
    rule = add_model(router, probes, best)["best_quality_knob"]
    y, ref = probes.correct[:, probes.models.index(best)], probes.correct[:, probes.models.index(incumbent)]
    assert rule["incumbent"] == incumbent and rule["serves_new"] and y.mean() > ref.mean()
    assert rule["new_quality"] == pytest.approx(y.mean()) and rule["incumbent_quality"] == pytest.approx(ref.mean())
    texts = pool.prompts[:40]
    routed = [router.route(p, 0.0) for p in texts]  # cost weight 0: the best quality, whatever the cost
    assert {d.model for d in routed} == {best} and all(d.mixed for d in routed)
    assert len({router.route(p, 0.3).model for p in texts}) > 1  # elsewhere the learned rule still decides
    again = Router.load(router.save(tmp_path / "b.tw"))
    assert {again.route(p, 0.0).model for p in texts} == {best}
    # a weaker model added next leaves the best-quality knob with the new best model
    rule = add_model(again, pool.rows(select(again, pool.prompts, 50)), weak)["best_quality_knob"]
    assert rule["incumbent"] == best and not rule["serves_new"]
    assert {again.route(p, 0.0).model for p in texts} == {best}


def test_without_the_incumbent_graded_on_the_probes_the_best_quality_rule_is_not_applied(shuffled):
    t, base_rows, pool_rows = shuffled
    best = "llama-3.1-nemotron-51b-instruct"
    router = Router("knn").fit(t.with_models([m for m in t.models if m != best]).rows(base_rows))
    pool = t.rows(pool_rows)
    probes = pool.with_models([best]).rows(select(router, pool.prompts, 50))
    rule = add_model(router, probes, best)["best_quality_knob"]
    assert not rule["serves_new"] and f"correct|{router.calibration['best_single_model']}" in rule["why_not"]
    assert router.guard is None


def test_cli_add_model_and_probe_select_check_their_inputs(split, tmp_path):
    from typer.testing import CliRunner

    from tierwise.cli import app

    def cli(*args):
        res = CliRunner().invoke(app, [str(a) for a in args])
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
        return res.exit_code, res.output

    base, pool = split
    router = Router("knn").fit(base)
    router.save(tmp_path / "base.tw")
    probes = tmp_path / "probes.csv"
    import pandas as pd

    pd.DataFrame({"prompt": pool.prompts[:20], f"correct|{NEW}": pool.correct[:20, pool.models.index(NEW)],
                  f"cost|{NEW}": pool.cost[:20, pool.models.index(NEW)]}).to_csv(probes, index=False)
    # an outcome table beside --add-model is not silently ignored
    code, out = cli("train", probes, "--router", tmp_path / "base.tw", "--add-model", NEW, "--probe", probes,
                    "--out", tmp_path / "new.tw")
    assert code == 2 and "not used with --add-model" in out and not (tmp_path / "new.tw").exists(), out
    # a model the router has: the error names the router file
    known = router.models[0]
    code, out = cli("train", "--router", tmp_path / "base.tw", "--add-model", known, "--probe", probes,
                    "--out", tmp_path / "new.tw")
    assert code == 2 and "base.tw: the router already has a model" in out and known in out, out
    # --out: a directory refused before the work, missing folders created
    (tmp_path / "adir").mkdir()
    code, out = cli("train", "--router", tmp_path / "base.tw", "--add-model", NEW, "--probe", probes,
                    "--out", tmp_path / "adir")
    assert code == 2 and "adir: is a directory" in out, out
    code, out = cli("train", "--router", tmp_path / "base.tw", "--add-model", NEW, "--probe", probes,
                    "--out", tmp_path / "out" / "new.tw")
    assert code == 0 and Router.load(tmp_path / "out" / "new.tw").models[-1] == NEW, out
    # probe select: -k past the candidates warns; --out into a missing folder works, into a directory is refused
    pd.DataFrame({"prompt": pool.prompts[:5]}).to_csv(tmp_path / "five.csv", index=False)
    code, out = cli("probe", "select", tmp_path / "base.tw", tmp_path / "five.csv", "-k", "100",
                    "--out", tmp_path / "sel" / "p.jsonl")
    assert code == 0 and "warning: " in out and "5 candidate prompts, fewer than -k 100" in out, out
    assert len((tmp_path / "sel" / "p.jsonl").read_text().splitlines()) == 5
    code, out = cli("probe", "select", tmp_path / "base.tw", tmp_path / "five.csv", "--out", tmp_path / "adir")
    assert code == 2 and "--out" in out and "adir: is a directory" in out, out
