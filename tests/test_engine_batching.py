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


def test_concurrent_routed_requests_through_the_engine_share_router_calls(fresh_stub, tmp_path):
    # the real router: the engine's batched decisions are the ones route() makes for each prompt alone
    from pathlib import Path

    import numpy as np

    from tierwise.config import Pyramid
    from tierwise.engine import Engine
    from tierwise.router import Router
    from tierwise.table import load_table
    from tierwise.testing import write_pyramid

    table = load_table(Path(__file__).resolve().parents[1] / "data/outcomes/llmrouter_dc.csv.gz").clean()
    router = Router("ensemble").fit(table.rows(np.arange(300)))
    path = router.save(tmp_path / "r.tw")
    cfg = write_pyramid(tmp_path / "p.yaml", fresh_stub.url, str(tmp_path / "log.sqlite"),
                        modes=("echo",) * len(router.models), names=router.models, extra=f"router: {path}\n")
    engine = Engine.from_pyramid(Pyramid.load(cfg))
    prompts = table.prompts[300:316]

    async def go():
        return await asyncio.gather(*(engine.chat({"model": "tierwise:0.5", "messages": [
            {"role": "user", "content": p}]}) for p in prompts))

    answers = asyncio.run(go())
    assert engine.batcher.decisions == len(prompts) and engine.batcher.batches < len(prompts)
    alone = Router.load(path)
    for p, a in zip(prompts, answers):
        assert a.record.chosen == alone.route(p, 0.5).model and a.record.route_ms > 0
        assert a.record.status == 200
