"""The engine from Python, without a server: route + call + fall back + record over stub backends."""

from __future__ import annotations

import asyncio
import time

import pytest

from tierwise.config import Pyramid
from tierwise.engine import Engine
from tierwise.engine.health import Breaker
from tierwise.errors import CapabilityError, ModelNotFound, RequestError, UpstreamRejected
from tierwise.testing import write_pyramid

MSG = [{"role": "user", "content": "hello there"}]


def _engine(stub, tmp_path, modes, **kw) -> Engine:
    extra = kw.pop("extra", "")
    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, str(tmp_path / "log.sqlite"), modes=modes,
                        timeout_s=kw.pop("timeout_s", 5.0), extra=extra, capabilities=kw.pop("capabilities", None))
    return Engine.from_pyramid(Pyramid.load(cfg), **kw)


def _run(coro):
    return asyncio.run(coro)


def test_chat_from_python_returns_the_body_and_the_record(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("echo", "echo"))
    seen = []
    engine.listeners.append(seen.append)
    a = _run(engine.chat({"model": "tierwise", "messages": MSG, "seed": 3}))
    assert a.body["choices"][0]["message"]["content"] == "echo: hello there"
    assert a.body["model"] == a.record.model in ("m0", "m1") and a.record.status == 200
    assert a.record.candidates == ["m0", "m1"] and a.record.upstream_id == a.body["id"]
    assert seen == [a.record] and engine.pending == 0
    assert fresh_stub.bodies()[-1]["seed"] == 3 and "temperature" not in fresh_stub.bodies()[-1]


def test_stream_from_python_yields_chunk_dicts(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("echo",))

    async def go():
        s = await engine.chat_stream({"model": "m0", "messages": MSG, "stream": True})
        return [c async for c in s], s.record

    chunks, rec = _run(go())
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there" and {c["model"] for c in chunks} == {"m0"}
    assert rec.status == 200 and rec.stream and rec.tokens_out > 0 and rec.usage_estimated
    assert engine.pending == 0


def test_errors_are_typed_and_carry_the_record(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("reject-400", "echo"), capabilities=[["tools"], []])
    with pytest.raises(ModelNotFound) as info:
        _run(engine.chat({"model": "nope", "messages": MSG}))
    assert info.value.status == 404 and info.value.record.status == 404
    with pytest.raises(UpstreamRejected) as info:
        _run(engine.chat({"model": "m0", "messages": MSG}))
    assert info.value.status == 400 and info.value.body()["error"]["code"] == "stub_rejected"
    assert fresh_stub.calls.get("reject-400") == 1 and not fresh_stub.calls.get("echo")  # no retry elsewhere
    with pytest.raises(CapabilityError, match="vision"):
        _run(engine.chat({"model": "tierwise", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}))
    with pytest.raises(RequestError) as info:
        _run(engine.chat({"model": "tierwise", "messages": MSG, "max_tokens": "10"}))  # no coercion
    assert info.value.status == 422 and info.value.param == "max_tokens"
    with pytest.raises(RequestError, match="too_many|limit is"):
        _run(engine.chat({"model": "tierwise", "messages": MSG * 5000}))
    with pytest.raises(RequestError, match="knob"):
        _run(engine.chat({"model": "tierwise:nan", "messages": MSG}))


def test_tools_are_routed_among_models_that_declare_them(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("echo", "tools", "echo"), capabilities=[[], ["tools"], []])
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for knob in ("0", "0.5", "1"):
        a = _run(engine.chat({"model": f"tierwise:{knob}", "messages": MSG, "tools": tools}))
        assert a.record.model == "m1" and a.record.candidates == ["m1"] and a.record.needs == ["tools"]
        assert a.record.excluded == {"m0": "lacks tools", "m2": "lacks tools"}


def test_the_context_check_counts_the_tool_definitions(fresh_stub, tmp_path):
    """Tools are part of the prompt: a request whose definitions overflow every context window is a 400
    before any model is called, not an answer cut short (or a model's own 400, which skips the fallback)."""
    cfg = write_pyramid(tmp_path / "p.yaml", fresh_stub.url, str(tmp_path / "log.sqlite"), modes=("tools", "tools"),
                        capabilities=[["tools"], ["tools"]], context_window=2048)
    engine = Engine.from_pyramid(Pyramid.load(cfg))
    big = [{"type": "function", "function": {"name": "f", "description": "alpha " * 2000,
                                             "parameters": {"type": "object"}}}]
    calls = len(fresh_stub.bodies())
    with pytest.raises(RequestError) as e:
        _run(engine.chat({"model": "tierwise", "messages": MSG, "tools": big, "max_tokens": 16}))
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"
    assert len(fresh_stub.bodies()) == calls  # refused before any model was asked
    a = _run(engine.chat({"model": "tierwise", "messages": MSG, "tools": big, "tool_choice": "none", "max_tokens": 16}))
    assert a.record.status == 200  # tool_choice none: the definitions are not in the prompt


def test_breaker_opens_after_failures_and_probes_after_cooldown():
    b = Breaker(failures=2, cooldown_s=0.2)
    b.begin(); b.failure()
    assert b.state == "closed" and b.available()
    b.begin(); b.failure()
    assert b.state == "open" and not b.available() and b.trips == 1
    time.sleep(0.25)
    assert b.state == "half_open" and b.available()
    b.begin()  # the probe
    assert not b.available()  # one probe at a time
    b.failure()
    assert b.state == "open" and b.trips == 2
    time.sleep(0.25)
    b.begin()
    b.success()
    assert b.state == "closed" and b.consecutive == 0


def test_a_stalled_model_costs_a_few_timeouts_then_is_skipped(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("stall", "echo"), timeout_s=0.3)
    for s in engine.slots:
        s.breaker = Breaker(failures=2, cooldown_s=60)

    async def go():
        times = []
        for _ in range(6):
            t = time.perf_counter()
            a = await engine.chat({"model": "m0", "messages": MSG})
            times.append(time.perf_counter() - t)
            assert a.record.model == "m1"
        return times

    times = _run(go())
    assert fresh_stub.calls.get("stall") == 2  # then the breaker keeps m0 out
    assert all(t < 0.2 for t in times[2:]) and all(t >= 0.3 for t in times[:2]), times
    assert engine.by_name["m0"].breaker.state == "open"


def test_every_breaker_open_still_tries_rather_than_refuse(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("echo",))
    b = engine.slots[0].breaker
    b.opened_at = time.monotonic()
    a = _run(engine.chat({"model": "tierwise", "messages": MSG}))
    assert a.record.status == 200 and b.state == "closed"  # the forced call succeeded: closed again


def test_one_key_cannot_hold_every_place(fresh_stub, tmp_path):
    engine = _engine(fresh_stub, tmp_path, ("slow-300",))
    engine.max_pending_per_key = 1
    from tierwise.errors import Overloaded

    async def go():
        body = {"model": "m0", "messages": MSG}
        first = asyncio.ensure_future(engine.chat(dict(body), key_hash="alice"))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            await engine.chat(dict(body), key_hash="alice")
        other = await engine.chat(dict(body), key_hash="bob")  # another key is not held up
        await first
        again = await engine.chat(dict(body), key_hash="alice")  # alice's place is free again
        return info.value, other, again

    err, other, again = _run(go())
    assert err.status == 429 and err.code == "too_many_in_flight" and err.record.status == 429
    assert other.record.status == again.record.status == 200
    assert engine.pending == 0 and engine.pending_by_key == {}


def test_the_routers_guard_and_expected_cost_reach_the_record_and_headers(fresh_stub, tmp_path):
    from tierwise.decision import Decision
    from tierwise.gateway.responses import record_headers

    class Guarded:
        name, rule, default_knob = "fake:guarded", "threshold", 0.5

        def route(self, text, knob=None, allowed=None):
            return Decision("m1", 1, {"m0": 0.4, "m1": 0.8}, "threshold", 0.5, self.name,
                            costs={"m0": 1e-5, "m1": 2e-4}, mixed=True, guard="hull-mix m0|m1 p=0.40 u=0.31")

        def parse_knob(self, spec):
            return float(spec)

    engine = _engine(fresh_stub, tmp_path, ("echo", "echo"), router=Guarded())
    a = _run(engine.chat({"model": "tierwise", "messages": MSG}))
    assert a.record.guard == "hull-mix m0|m1 p=0.40 u=0.31" and a.record.model == "m1"
    h = record_headers(a.record, a.decision)
    assert h["x-tierwise-guard"] == a.record.guard and float(h["x-tierwise-expected-cost"]) == 2e-4


def test_a_loaded_router_is_warm_before_the_first_request(tmp_path):
    # the lazy parts (the MF seeds fused for inference, scipy imported) run at start-up, not on a client's request
    from pathlib import Path

    import numpy as np

    from tierwise.engine.build import load_router
    from tierwise.router import Router
    from tierwise.table import load_table

    table = load_table(Path(__file__).resolve().parents[1] / "data/outcomes/llmrouter_dc.csv.gz").clean()
    trained = Router("ensemble").fit(table.rows(np.arange(300)))
    path = trained.save(tmp_path / "r.tw")
    cfg = write_pyramid(tmp_path / "p.yaml", "http://127.0.0.1:9/v1", str(tmp_path / "log.sqlite"),
                        modes=("echo",) * len(trained.models), names=trained.models, extra=f"router: {path}\n")
    router = load_router(Pyramid.load(cfg))
    mf = next(m for m in router.quality.models if hasattr(m, "_fused"))
    assert mf._fused is not None
    assert Router.load(path).quality.models[1]._fused is None  # loading alone leaves it lazy


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("extra, param", [
    ({"messages": [MSG[0], {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": "f"}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]}, "messages.1.tool_calls.0.function"),
    ({"messages": [MSG[0], {"role": "assistant", "tool_calls": ["c1"]}]}, "messages.1.tool_calls.0"),
    ({"tools": [_TOOL], "tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function"),
    ({"tools": [_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": "f"}]}, "tools.0.function"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools.0.function.name"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"stream_options": "x"}, "stream_options"),
])
def test_malformed_fields_are_422s_naming_the_field(extra, param):
    """A tool call or tool_choice whose ``function`` is not an object used to reach the code that reads it
    (a 500, or a 502 from the model); the field names ``stream*`` were taken for pydantic's union labels."""
    from tierwise.engine.request import ChatRequest

    with pytest.raises(RequestError) as e:
        ChatRequest.parse({"model": "m0", "messages": MSG, **extra})
    assert e.value.status == 422 and e.value.param == param, (e.value.param, str(e.value))


def test_well_formed_tool_fields_and_other_tool_types_pass():
    from tierwise.engine.request import ChatRequest

    for extra in ({"tools": [_TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}},
                  {"tools": [{"type": "custom", "custom": {"name": "x"}}], "tool_choice": "required"},
                  {"messages": [MSG[0], {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}):
        assert ChatRequest.parse({"model": "m0", "messages": MSG, **extra}).model == "m0"
