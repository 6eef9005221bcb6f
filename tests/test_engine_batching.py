"""Routing decisions batched per event-loop turn (engine/batching.py): concurrent routed requests are
decided by one router call with exactly the decisions they would get alone; a request alone is decided
alone; a router without ``route_many`` and a failing decision are handled one request at a time."""

from __future__ import annotations

import asyncio

import pytest

from tierwise.decision import Decision
from tierwise.engine.batching import RouteBatcher


class Scripted:
    """A router that records its calls; prompts containing "boom" make it fail."""

    name, rule, default_knob = "scripted", "cost_weight", 0.0

    def __init__(self, batched: bool = True):
        self.calls: list[int] = []
        if not batched:
            self.route_many = None

    def _decide(self, text, knob):
        if "boom" in text:
            raise ValueError(f"cannot route {text!r}")
        model = "m1" if len(text) > 5 else "m0"
        return Decision(model, int(model[1]), {"m0": 0.5, "m1": 0.9}, self.rule, knob or 0.0, self.name)

    def route(self, text, knob=None, allowed=None, request_id=None):
        self.calls.append(1)
        return self._decide(text, knob)

    def route_many(self, texts, knobs, allowed, request_ids):
        self.calls.append(len(texts))
        return [self._decide(t, k) for t, k in zip(texts, knobs)]


async def _decide_together(batcher, texts):
    return await asyncio.gather(*(batcher.decide(t, 0.1, ["m0", "m1"]) for t in texts))


def test_requests_queued_in_one_turn_are_decided_by_one_call():
    router = Scripted()
    batcher = RouteBatcher(router)
    got = asyncio.run(_decide_together(batcher, ["hi", "a longer prompt", "yo", "another long one"]))
    assert router.calls == [4] and (batcher.batches, batcher.decisions) == (1, 4)
    assert [r.decision.model for r in got] == ["m0", "m1", "m0", "m1"]
    assert {r.batch for r in got} == {4} and all(r.error is None and r.route_ms >= 0 for r in got)


def test_a_request_alone_is_decided_alone_and_big_queues_are_split():
    router = Scripted()
    batcher = RouteBatcher(router, max_batch=3)
    (one,) = asyncio.run(_decide_together(batcher, ["solo"]))
    assert router.calls == [1] and one.batch == 1 and one.decision.model == "m0"
    asyncio.run(_decide_together(batcher, [f"p{i}" for i in range(7)]))
    assert router.calls[1:] == [3, 3, 1]


def test_a_router_without_route_many_is_called_once_per_request():
    router = Scripted(batched=False)
    got = asyncio.run(_decide_together(RouteBatcher(router), ["a", "bbbbbbbb", "c"]))
    assert router.calls == [1, 1, 1] and [r.decision.model for r in got] == ["m0", "m1", "m0"]


def test_one_failing_prompt_fails_only_its_own_decision():
    router = Scripted()
    got = asyncio.run(_decide_together(RouteBatcher(router), ["fine prompt", "boom", "ok"]))
    assert router.calls == [3, 1, 1, 1]  # the batch failed, then each request alone
    assert got[1].decision is None and "ValueError" in got[1].error and "boom" in got[1].error
    assert [got[0].decision.model, got[2].decision.model] == ["m1", "m0"]


def test_a_request_cancelled_while_queued_is_not_decided():
    router = Scripted()
    batcher = RouteBatcher(router)

    async def go():
        gone = batcher.decide("client left", 0.1, ["m0"])
        kept = batcher.decide("still here", 0.1, ["m0"])
        gone.cancel()
        return await kept

    assert asyncio.run(go()).decision.model == "m1" and router.calls == [1]


@pytest.fixture(scope="module")
def small_router(tmp_path_factory):
    from pathlib import Path

    import numpy as np

    from tierwise.router import Router
    from tierwise.table import load_table

    table = load_table(Path(__file__).resolve().parents[1] / "data/outcomes/llmrouter_dc.csv.gz").clean()
    router = Router("ensemble").fit(table.rows(np.arange(300)))
    return router, router.save(tmp_path_factory.mktemp("router") / "r.tw"), table.prompts[300:340]


def _engine_for(stub, tmp_path, router_path, models, **kw):
    from tierwise.config import Pyramid
    from tierwise.engine import Engine
    from tierwise.testing import write_pyramid

    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, str(tmp_path / "log.sqlite"), modes=("echo",) * len(models),
                        names=models, extra=f"router: {router_path}\n")
    return Engine.from_pyramid(Pyramid.load(cfg), **kw)


def _ask_together(engine, prompts, model="tierwise:0.5"):
    async def go():
        try:
            return await asyncio.gather(*(engine.chat({"model": model, "messages": [
                {"role": "user", "content": p}]}) for p in prompts))
        finally:
            await engine.aclose()

    return asyncio.run(go())


def test_concurrent_routed_requests_through_the_engine_share_router_calls(fresh_stub, tmp_path, small_router):
    # the real router: the engine's batched decisions are the ones route() makes for each prompt alone
    from tierwise.router import Router

    router, path, prompts = small_router
    engine = _engine_for(fresh_stub, tmp_path, path, router.models)
    assert engine.batcher.remote is None  # the library decides in the loop unless asked
    answers = _ask_together(engine, prompts[:16])
    assert engine.batcher.decisions == 16 and engine.batcher.batches < 16
    alone = Router.load(path)
    for p, a in zip(prompts, answers):
        assert a.record.chosen == alone.route(p, 0.5).model and a.record.route_ms > 0
        assert a.record.status == 200


def test_a_router_process_decides_exactly_as_the_loop_and_stops_with_the_engine(fresh_stub, tmp_path, small_router):
    router, path, prompts = small_router
    engine = _engine_for(fresh_stub, tmp_path, path, router.models, router_process=True)
    remote = engine.batcher.remote
    assert remote is not None and remote.alive and remote._proc.is_alive()
    answers = _ask_together(engine, prompts)
    assert remote.sent >= 1 and engine.batcher.batches < len(prompts)
    for p, a in zip(prompts, answers):
        d = router.route(p, 0.5)
        assert (a.record.chosen, a.record.guard, a.record.knob) == (d.model, d.guard, d.knob)
        assert a.record.scores == pytest.approx(d.scores, abs=1e-6) and a.decision.costs == pytest.approx(d.costs)
    remote._proc.join(10)
    assert not remote._proc.is_alive()  # aclose() stopped the child


def test_requests_are_decided_in_the_loop_when_the_router_process_dies(fresh_stub, tmp_path, small_router, capfd):
    router, path, prompts = small_router
    engine = _engine_for(fresh_stub, tmp_path, path, router.models, router_process=True)
    remote = engine.batcher.remote
    remote._proc.kill()
    remote._proc.join(10)
    answers = _ask_together(engine, prompts[:8])  # the batch sent to the dead child is decided here
    assert engine.batcher.batches < 8
    assert [a.record.chosen for a in answers] == [router.route(p, 0.5).model for p in prompts[:8]]
    assert all(a.record.status == 200 and a.record.error is None for a in answers)
    assert not remote.alive and "router process exited" in capfd.readouterr().err


def test_router_process_setting(tmp_path, small_router):
    from tierwise.config import Pyramid
    from tierwise.engine.build import wants_router_process
    from tierwise.router import Router
    from tierwise.testing import write_pyramid

    router, _, _ = small_router
    for text, want in (("router_process: on\n", "on"), ("router_process: off\n", "off"), ("", "auto")):
        cfg = write_pyramid(tmp_path / "p.yaml", "http://127.0.0.1:9/v1", "off", extra=text)
        assert Pyramid.load(cfg).router_process == want
    with pytest.raises(Exception, match="router_process"):
        Pyramid.load(write_pyramid(tmp_path / "p.yaml", "http://127.0.0.1:9/v1", "off", extra="router_process: x\n"))
    stand_in = Router.stand_in(["a", "b"], [1.0, 2.0])
    assert wants_router_process("on", stand_in) and not wants_router_process("off", router)
    assert not wants_router_process("auto", stand_in)  # a heuristic costs less than sending it
    assert not wants_router_process("auto", router, workers=10_000)  # no core to spare


def test_a_router_that_cannot_go_to_a_process_is_served_from_the_loop(fresh_stub, tmp_path, capfd):
    from tierwise.config import Pyramid
    from tierwise.engine import Engine
    from tierwise.testing import write_pyramid

    router = Scripted()
    router.models, router.hook = ["m0", "m1"], lambda: None  # a lambda does not pickle
    cfg = write_pyramid(tmp_path / "p.yaml", fresh_stub.url, "off", modes=("echo", "echo"))
    engine = Engine.from_pyramid(Pyramid.load(cfg), router=router, router_process=True)
    assert engine.batcher.remote is None and "no router process" in capfd.readouterr().err
    answers = asyncio.run(_decide_together(engine.batcher, ["a", "a longer one"]))
    assert [a.decision.model for a in answers] == ["m0", "m1"]


def test_a_stuck_router_process_is_stopped_and_its_batch_decided_in_the_loop(small_router, capfd):
    import os
    import signal

    from tierwise.engine.router_process import RouterProcess

    router, _, prompts = small_router
    remote = RouterProcess(router, answer_timeout_s=0.5)
    os.kill(remote._proc.pid, signal.SIGSTOP)  # alive, never answering
    batcher = RouteBatcher(router, remote=remote)

    async def go():
        return await asyncio.gather(*(batcher.decide(p, 0.3, router.models) for p in prompts[:4]))

    try:
        got = asyncio.run(go())
    finally:
        remote.close()
    assert remote.sent == 1 and not remote.alive and "did not answer within 0.5 s" in capfd.readouterr().err
    assert [g.decision.model for g in got] == [router.route(p, 0.3).model for p in prompts[:4]]
    assert all(g.route_ms >= 500 for g in got)  # the wait is on the record
