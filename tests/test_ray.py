"""collect --ray and eval --ray on a real local Ray cluster (2 CPUs), compared with the local runs.

Fast tests use in-code backends (pickled by value to the Ray workers) or the HTTP stub; the slow
test runs two real SmolLM2 actors, kills both mid-run (one by SIGKILL: Ray restarts it; one by
``ray.kill``: the pool replaces it), and ends with the local runner's table, byte for byte.
Everything here skips when Ray is not installed (``pip install 'tierwise[ray]'``).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import signal
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'tierwise[ray]')")

from tierwise.backends.base import Backend, ChatResult  # noqa: E402
from tierwise.collection import CollectError, ModelSpec, run_collect, specs_from_pyramid  # noqa: E402
from tierwise.collection.runner_local import LocalRunner  # noqa: E402
from tierwise.collection.runner_ray import RayRunner  # noqa: E402
from tierwise.graders import make_grader  # noqa: E402

from _helpers import embedded_or_skip  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray instance for the module, 2 CPUs as on CI; this module's backends travel by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Arith(Backend):
    """Answers 'What is a+b?' (wrong on odd a when ``wrong_on_odd``), with fixed latency and logprobs so
    a table does not depend on timing; exits its process on ``crash_on`` (a prompt that kills the model)."""

    context_window = 4096

    def __init__(self, name: str, delay: float = 0.02, wrong_on_odd: bool = False, crash_on: str | None = None,
                 fail_start: bool = False):
        if fail_start:
            raise FileNotFoundError("no such model file: /models/missing.gguf")
        self.name, self.delay, self.wrong_on_odd, self.crash_on = name, delay, wrong_on_odd, crash_on

    async def chat(self, messages, **kw):
        q = messages[-1]["content"]
        if self.crash_on is not None and q == self.crash_on:
            os._exit(3)
        await asyncio.sleep(self.delay)
        a, b = (int(x) for x in q.split()[2].rstrip("?").split("+"))
        answer = a + b + (1 if self.wrong_on_odd and a % 2 else 0)
        return ChatResult(text=f"{a}+{b}. The answer is {answer}.", tokens_in=12 + a % 7, tokens_out=6,
                          token_logprobs=[-0.1 * (a % 3), -0.2], latency_s=0.01 * (a % 5 + 1))

    async def complete(self, body, **kw):  # pragma: no cover - collect uses chat()
        raise NotImplementedError

    def stream(self, *a, **k):  # pragma: no cover
        raise NotImplementedError


def _items(n: int) -> list[dict]:
    return [{"prompt": f"What is {i}+{2 * i}?", "answer": str(3 * i), "source": "arith", "item_id": str(i)}
            for i in range(n)]


def _specs(concurrency: int = 2, **small) -> list[ModelSpec]:
    return [ModelSpec("small", "small", 0.1, 0.2, concurrency,
                      functools.partial(Arith, "small", wrong_on_odd=True, **small)),
            ModelSpec("large", "large", 1.0, 2.0, 3, functools.partial(Arith, "large"))]


def _collect(items, specs, out: Path, runner=None, **kw):
    return asyncio.run(run_collect(items, specs, make_grader("numeric"), out, progress=False, runner=runner, **kw))


def _killer(runner: RayRunner, plan: dict[str, tuple[int, str]]):
    """on_cell hook: after model M's N-th committed cell, kill its current worker while its next cell is
    in flight (``sigkill``: the process dies, Ray restarts it; ``ray.kill``: gone for good, replaced)."""
    seen: dict[str, int] = {}
    done: list[tuple[str, str, int]] = []

    def kill(model: str, how: str) -> None:
        pool = runner.pools[model]
        pid = pool.workers[-1]["pid"]
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)
        else:
            ray.kill(pool.handles[-1], no_restart=True)
        done.append((model, how, pid))

    def on_cell(model: str, _phash: str) -> None:
        seen[model] = seen.get(model, 0) + 1
        if model in plan and seen[model] == plan[model][0]:
            # call_soon: the feeder that committed this cell sends its next one first, so one is in flight
            asyncio.get_running_loop().call_soon(kill, model, plan[model][1])

    return on_cell, done


def test_ray_collect_writes_the_local_table_and_survives_dead_workers(tmp_path):
    items = _items(40)
    local = _collect(items, _specs(), tmp_path / "local.csv.gz")
    assert local.computed == 80 and not local.failed

    runner = RayRunner()
    on_cell, killed = _killer(runner, {"small": (5, "sigkill"), "large": (8, "ray.kill")})
    r = _collect(items, _specs(), tmp_path / "ray.csv.gz", runner=runner, on_cell=on_cell)
    assert [k[:2] for k in sorted(killed)] == [("large", "ray.kill"), ("small", "sigkill")]
    assert r.runner == "ray" and r.computed == 80 and r.reused == 0 and not r.failed, r.failed
    assert r.retried >= 2  # each kill had a cell in flight; it was sent again
    small, large = runner.pools["small"], runner.pools["large"]
    assert small.lost >= 1 and len(small.handles) == 1, "SIGKILL: Ray restarted the same actor"
    assert len({w["pid"] for w in small.workers}) == 2
    assert large.lost >= 1 and len(large.handles) == 2, "ray.kill(no_restart): the pool started a new actor"
    # the same cells, whichever runner computed them: byte-identical files
    assert (tmp_path / "ray.csv.gz").read_bytes() == (tmp_path / "local.csv.gz").read_bytes()

    # resumable: the same command again computes nothing, on Ray or locally
    again = _collect(items, _specs(), tmp_path / "ray.csv.gz", runner=RayRunner())
    assert (again.computed, again.reused) == (0, 80)
    assert _collect(items, _specs(), tmp_path / "ray.csv.gz").reused == 80


def test_a_cell_that_kills_its_worker_fails_alone_and_is_retried_by_the_next_run(tmp_path):
    items, out = _items(12), tmp_path / "t.csv.gz"
    poison = "What is 7+14?"
    # one cell in flight per worker (as for a local GGUF model): the death is the poison cell's alone
    r = _collect(items, _specs(1, crash_on=poison), out, runner=RayRunner(max_attempts=3))
    assert [(m, i) for m, i, _ in r.failed] == [("small", "7")]
    assert "worker died 3 times" in r.failed[0][2]
    assert r.computed == 23 and r.retried == 2
    frame = pd.read_csv(out)
    assert frame["correct|small"].isna().sum() == 1 and np.isnan(frame.loc[7, "correct|small"])
    # the model is fixed: a rerun computes only the failed cell
    fixed = _collect(items, _specs(), out, runner=RayRunner())
    assert (fixed.computed, fixed.reused, fixed.failed) == (1, 23, [])
    assert pd.read_csv(out)["correct|small"].notna().all()


def test_a_worker_that_cannot_start_stops_the_run_with_its_error(tmp_path):
    with pytest.raises(CollectError, match=r"'small': its Ray worker did not start: .*no such model file"):
        _collect(_items(4), _specs(fail_start=True), tmp_path / "t.csv.gz", runner=RayRunner())
    assert not (tmp_path / "t.csv.gz").exists()


def test_pool_shapes_follow_the_pyramid(tmp_path):
    from tierwise.config import Pyramid

    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "models:\n"
        "  - {name: tiny, backend: llama_cpp, embedded: smollm2-135m, input_per_1m: 0.01, output_per_1m: 0.02,"
        " n_threads: 2, max_concurrency: 1}\n"
        "  - {name: api, backend: openai, endpoint: 'http://127.0.0.1:9/v1', model: m, input_per_1m: 1,"
        " output_per_1m: 2, max_concurrency: 24}\n"
    )
    tiny, api = specs_from_pyramid(Pyramid.load(cfg))
    local = RayRunner(actors_per_model=3).pool_config(tiny)
    assert (local.size, local.capacity, local.options["num_cpus"], local.n_threads) == (3, 1, 2, None)
    assert local.options["scheduling_strategy"] == "SPREAD" and "num_gpus" not in local.options
    pinned = RayRunner(cpus_per_actor=1, gpus_per_actor=0.5).pool_config(tiny)
    assert (pinned.options["num_cpus"], pinned.n_threads, pinned.options["num_gpus"]) == (1, 1, 0.5)
    http = RayRunner(actors_per_model=3).pool_config(api)
    assert (http.size, http.capacity, http.options["num_cpus"], http.options["max_concurrency"]) == (1, 24, 0, 24)


# ------------------------------------------------------------------------------------------
# the CLI, on HTTP models (the stub): async actors with the model's concurrency


def _stub_pyramid(tmp_path: Path, url: str, modes: tuple[str, ...]) -> Path:
    from tierwise.testing import write_pyramid

    return write_pyramid(tmp_path / "pyramid.yaml", url, str(tmp_path / "log.sqlite"), modes=modes)


def _prompts(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text("".join(f'{{"prompt": "{i}+{i} makes {2 * i + i % 2}", "answer": "{2 * i}"}}\n' for i in range(n)))
    return p


def _without_latency(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return frame[[c for c in frame.columns if not c.startswith("latency_s|")]]


def test_cli_collect_on_ray_over_http_matches_local(tmp_path, stub):
    from typer.testing import CliRunner

    from tierwise.cli import app

    cfg = _stub_pyramid(tmp_path, stub.url, ("confident@m0", "slow-20@m1"))
    prompts = _prompts(tmp_path, 30)
    base = ["collect", str(prompts), "--config", str(cfg), "--grader", "numeric", "-q"]
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "ray.csv.gz"), "--ray"])
    assert r.exit_code == 0, r.output
    assert "60 cells computed, 0 reused from the sidecar, 0 failed" in r.output
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "local.csv.gz")])
    assert r.exit_code == 0, r.output
    ray_t, local_t = _without_latency(tmp_path / "ray.csv.gz"), _without_latency(tmp_path / "local.csv.gz")
    pd.testing.assert_frame_equal(ray_t, local_t)
    assert ray_t["correct|m0"].tolist() == [float(i % 2 == 0) for i in range(30)]
    assert (ray_t["logprob|m0"] == -0.05).all()
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "ray.csv.gz"), "--ray"])
    assert r.exit_code == 0 and "0 cells computed, 60 reused" in r.output, r.output


def test_cli_collect_on_ray_reports_failed_cells(tmp_path, stub):
    from typer.testing import CliRunner

    from tierwise.cli import app

    cfg = _stub_pyramid(tmp_path, stub.url, ("echo@m0", "fail@m1"))
    out = tmp_path / "t.csv.gz"
    r = CliRunner().invoke(app, ["collect", str(_prompts(tmp_path, 4)), "--config", str(cfg), "--grader", "numeric",
                                 "--out", str(out), "--ray", "-q"])
    assert r.exit_code == 1, r.output
    assert "4 cells computed" in r.output and "4 failed" in r.output
    assert "failed: m1 " in r.output and "stub failure" in r.output and "rerun the same command" in r.output
    db = sqlite3.connect(str(out) + ".cells.sqlite")
    assert db.execute("SELECT model, COUNT(*) FROM cells GROUP BY model").fetchall() == [("m0", 4)]
    db.close()


# ------------------------------------------------------------------------------------------
# eval --ray


def test_eval_on_ray_equals_local(tmp_path):
    from tierwise.eval_ray import RayFoldRunner
    from tierwise.evaluate import evaluate
    from tierwise.table import load_table

    rng = np.random.default_rng(1)
    n, models = 120, ["a", "b", "c"]
    X = rng.normal(size=(n, 16)).astype(np.float32)
    skill = 1 / (1 + np.exp(-(X[:, :3] * [1.0, 2.0, 3.0])))
    frame = pd.DataFrame({"prompt": [f"prompt number {i}" for i in range(n)]})
    for j, m in enumerate(models):
        frame[f"correct|{m}"] = (rng.random(n) < skill[:, j]).astype(float)
        frame[f"cost|{m}"] = 0.001 * 10 ** j * (1 + 0.1 * rng.random(n))
    frame["source"] = np.where(X[:, 0] > 0, "first", "second")  # the source model gets its labels on the workers too
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = load_table(tmp_path / "t.csv")
    routers = ("knn", "mf", "linear", "source")
    local = evaluate(table, routers, folds=3, features=X)
    lines: list[str] = []
    remote = evaluate(table, routers, folds=3, features=X, runner=RayFoldRunner(progress=lines.append))
    for kind in routers:
        assert np.array_equal(local.oof[kind], remote.oof[kind]), kind
    assert remote.routers == local.routers
    assert lines and lines[-1] == "12/12 (router, fold) fits done"
    assert not np.allclose(local.oof["source"], local.oof["source"].mean(axis=0))  # it did learn the two sources


# ------------------------------------------------------------------------------------------
# the bar: two real SmolLM2 actors, both killed mid-run, the local runner's table byte for byte


def _cells(sidecar: Path) -> dict:
    db = sqlite3.connect(sidecar)
    try:
        rows = db.execute("SELECT model, prompt_hash, correct, cost, tokens_in, tokens_out, logprob, pred, output "
                          "FROM cells").fetchall()
    finally:
        db.close()
    return {(r[0], r[1]): r[2:] for r in rows}


@pytest.mark.slow
def test_two_smollm2_actors_killed_mid_run_give_the_local_table(tmp_path):
    embedded_or_skip("smollm2-135m")
    from tierwise.config import Pyramid

    cfg = tmp_path / "pyramid.yaml"
    cfg.write_text("models:\n" + "".join(
        f"  - {{name: {name}, backend: llama_cpp, embedded: smollm2-135m, input_per_1m: {p}, output_per_1m: {2 * p},"
        " context_window: 512, n_threads: 1, timeout_s: 120}\n" for name, p in (("tiny-a", 0.01), ("tiny-b", 0.1))))
    specs = specs_from_pyramid(Pyramid.load(cfg))
    items = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b), "source": "arith", "item_id": str(i)}
             for i, (a, b) in enumerate((3 + i, 2 * i + 5) for i in range(12))]
    grader = make_grader("numeric", max_tokens=32)  # greedy (temperature 0): deterministic answers

    def collect(out: Path, runner, on_cell=None):
        return asyncio.run(run_collect(items, specs, grader, out, progress=False, runner=runner, on_cell=on_cell))

    runner = RayRunner()
    on_cell, killed = _killer(runner, {"tiny-a": (3, "sigkill"), "tiny-b": (5, "ray.kill")})
    ray_out = tmp_path / "ray.csv.gz"
    r = collect(ray_out, runner, on_cell)
    assert len(killed) == 2 and r.computed == 24 and not r.failed, (killed, r.failed)
    assert runner.pools["tiny-a"].lost >= 1 and len(runner.pools["tiny-b"].handles) == 2
    assert r.retried >= 2
    assert {w["pid"] for p in runner.pools.values() for w in p.workers}.isdisjoint({os.getpid()})

    # the local runner from scratch computes the very same cells (latency aside: it is measured)
    local_out = tmp_path / "local.csv.gz"
    assert collect(local_out, LocalRunner()).computed == 24
    ray_cells, local_cells = _cells(Path(str(ray_out) + ".cells.sqlite")), _cells(Path(str(local_out) + ".cells.sqlite"))
    assert ray_cells == local_cells and len(ray_cells) == 24
    frame = pd.read_csv(ray_out)
    assert set(frame["correct|tiny-a"]) <= {0.0, 1.0} and (frame["tokens_out|tiny-a"] <= 32).all()
    assert frame["correct|tiny-a"].tolist() == frame["correct|tiny-b"].tolist()  # same weights, same answers
    # and its table is byte-identical: everything but latency_s|, then the whole file on the same cells
    drop = [c for c in frame.columns if c.startswith("latency_s|")]
    assert frame.drop(columns=drop).to_csv() == pd.read_csv(local_out).drop(columns=drop).to_csv()
    local_on_ray_cells = tmp_path / "local-on-ray-cells.csv.gz"
    rerun = asyncio.run(run_collect(items, specs, grader, local_on_ray_cells, progress=False,
                                    sidecar=Path(str(ray_out) + ".cells.sqlite")))
    assert (rerun.computed, rerun.reused) == (0, 24)
    assert local_on_ray_cells.read_bytes() == ray_out.read_bytes()
    assert gzip.decompress(ray_out.read_bytes()).startswith(b"prompt,source,item_id,answer,grader,correct|tiny-a")
