"""The gateway in front of a real local model: ``tierwise serve`` with SmolLM2-135M (llama.cpp).

Pyramid: the embedded SmolLM2 (cheap, 512-token context here) below a stub HTTP model standing in
for a hosted big model, so the real model answers routed traffic and the context-window rule has
somewhere to send long prompts.
"""

from __future__ import annotations

import time

import openai
import pytest
from _helpers import embedded_or_skip

from tierwise.testing import StubBackend, free_port, start_gateway, stop_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gguf = embedded_or_skip("smollm2-135m")
    tmp = tmp_path_factory.mktemp("llama")
    with StubBackend() as stub:
        cfg = tmp / "pyramid.yaml"
        cfg.write_text(f"""models:
  - name: smollm2
    backend: llama_cpp
    path: {gguf}
    input_per_1m: 0.01
    output_per_1m: 0.02
    context_window: 512
    timeout_s: 120
    n_threads: 2
  - name: big
    backend: openai
    endpoint: {stub.url}
    model: echo
    input_per_1m: 5
    output_per_1m: 15
    context_window: 8192
log: {tmp / 'log.sqlite'}
""")
        port = free_port()
        proc = start_gateway(cfg, port)
        try:
            yield {"client": openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                                           timeout=180), "log": tmp / "log.sqlite"}
        finally:
            stop_gateway(proc)


def test_real_model_non_stream(gw):
    c = gw["client"]
    raw = c.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
    resp = raw.parse()
    assert resp.model == "smollm2" and raw.headers["x-tierwise-model"] == "smollm2"
    text = resp.choices[0].message.content
    assert text.strip() and not text.startswith("echo:")
    assert 0 < resp.usage.completion_tokens <= 24
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(
        (resp.usage.prompt_tokens * 0.01 + resp.usage.completion_tokens * 0.02) / 1e6)


def test_real_model_stream_matches_usage(gw):
    c = gw["client"]
    chunks = list(c.chat.completions.create(
        model="tierwise:0", messages=[{"role": "user", "content": "Say hello in three words."}], max_tokens=16,
        stream=True, stream_options={"include_usage": True}))
    assert {ch.model for ch in chunks} == {"smollm2"}  # knob 0: always the cheapest model
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 16
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].finish_reason) == 1


def test_long_prompt_skips_the_small_context_model(gw):
    from tierwise.decision_log import DecisionLog

    c = gw["client"]
    long = "Summarise this. " + " ".join(f"fact {i} is about item {i}." for i in range(200))
    resp = c.chat.completions.create(model="tierwise:0", messages=[{"role": "user", "content": long}], max_tokens=16)
    assert resp.model == "big"  # SmolLM2's 512-token window cannot hold it, even at "always cheapest"
    direct = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": long}], max_tokens=16)
    assert direct.model == "big"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = {r["upstream_id"]: r for r in DecisionLog(gw["log"]).rows()}
        if direct.id in rows:
            break
        time.sleep(0.05)
    passed = rows[direct.id]["fallbacks"][0]
    assert (passed["model"], passed["reason"]) == ("smollm2", "context") and "context window 512" in passed["error"]
    assert rows[direct.id]["excluded"]["smollm2"].startswith("context window 512 < prompt")


def test_a_client_hanging_up_stops_the_local_model(gw):
    """A non-streamed request abandoned by its client stops decoding: the next one does not wait."""
    import httpx

    base = str(gw["client"].base_url).rstrip("/")
    body = {"model": "smollm2", "max_tokens": 450, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base + "/chat/completions", json=body, timeout=0.5)  # ~4 s of decoding asked for
    t = time.perf_counter()
    r = gw["client"].chat.completions.create(model="smollm2", max_tokens=4,
                                             messages=[{"role": "user", "content": "Say hi."}])
    waited = time.perf_counter() - t
    assert r.model == "smollm2" and waited < 1.5, f"the next request waited {waited:.1f} s"
