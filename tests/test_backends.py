"""Backends against real parts: an OpenAI-shaped uvicorn server on 127.0.0.1, and SmolLM2 in llama.cpp."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tierwise.backends import BackendError, build_backend
from tierwise.backends.openai_http import OpenAIBackend
from tierwise.config import ModelConfig, default_pyramid

MSGS = [{"role": "user", "content": "Say hello."}]


# ---- a tiny OpenAI-compatible server; the requested model id picks the behaviour ------------


def _make_app(seen: list) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append({"port": request.client.port, "auth": request.headers.get("authorization"), "body": body})
        model = body["model"]
        if model == "fail500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model == "stall":
            await asyncio.sleep(5)
        words = ["Hello", " there", "!"]
        if body.get("stream"):
            async def events():
                for i, w in enumerate(words):
                    chunk = {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    if model == "stall-stream" and i == 0:
                        await asyncio.sleep(5)
                yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        resp = {
            "id": "x",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }
        if body.get("logprobs"):
            content = [{"token": w, "logprob": -0.1 * (i + 1), "top_logprobs": []} for i, w in enumerate(words)]
            content[0]["top_logprobs"] = [{"token": "Hello", "logprob": -0.1}, {"token": "Hi", "logprob": -2.5}]
            resp["choices"][0]["logprobs"] = {"content": content}
        return resp

    return app


@pytest.fixture(scope="module")
def server():
    seen: list = []
    config = uvicorn.Config(_make_app(seen), host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", seen
    srv.should_exit = True
    thread.join(timeout=10)


def _backend(url: str, model: str = "ok", **kw) -> OpenAIBackend:
    return OpenAIBackend("remote", url, model, **kw)


def test_http_chat_usage_logprobs_and_keepalive(server):
    url, seen = server

    async def go():
        b = _backend(url, api_key="sk-test", timeout_s=5)
        try:
            r1 = await b.chat(MSGS, max_tokens=8, logprobs=True, top_logprobs=2)
            r2 = await b.chat(MSGS, stop=["\n"])
        finally:
            await b.aclose()
        return r1, r2

    start = len(seen)
    r1, r2 = asyncio.run(go())
    assert r1.text == "Hello there!" and (r1.tokens_in, r1.tokens_out) == (11, 3) and r1.finish_reason == "stop"
    assert r1.token_logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert r1.first_token_top == {"Hello": -0.1, "Hi": -2.5}
    assert r2.token_logprobs is None and r2.first_token_top is None
    reqs = seen[start:]
    assert reqs[0]["auth"] == "Bearer sk-test"
    assert reqs[0]["body"]["max_tokens"] == 8 and reqs[0]["body"]["top_logprobs"] == 2
    assert reqs[1]["body"]["stop"] == ["\n"] and "logprobs" not in reqs[1]["body"]
    assert reqs[0]["port"] == reqs[1]["port"], "the second request should reuse the kept-alive connection"


def test_http_stream(server):
    url, _ = server

    async def go():
        b = _backend(url, timeout_s=5)
        try:
            return [d async for d in b.stream(MSGS)]
        finally:
            await b.aclose()

    deltas = asyncio.run(go())
    assert "".join(d.text for d in deltas) == "Hello there!"
    assert [d.text for d in deltas[:-1]] == ["Hello", " there", "!"]
    last = deltas[-1]
    assert last.finish_reason == "stop" and (last.tokens_in, last.tokens_out) == (11, 3)


def test_http_500_is_backend_error_with_status(server):
    url, _ = server

    async def go(stream: bool):
        b = _backend(url, "fail500", timeout_s=5)
        try:
            if stream:
                return [d async for d in b.stream(MSGS)]
            return await b.chat(MSGS)
        finally:
            await b.aclose()

    for stream in (False, True):
        with pytest.raises(BackendError) as info:
            asyncio.run(go(stream))
        assert info.value.status == 500 and not info.value.timeout
        assert "HTTP 500" in str(info.value) and "boom" in str(info.value)


def test_http_stall_times_out(server):
    url, _ = server

    async def go(model: str, stream: bool):
        b = _backend(url, model, timeout_s=30)
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendError) as info:
                if stream:
                    async for _ in b.stream(MSGS, timeout=0.5):
                        pass
                else:
                    await b.chat(MSGS, timeout=0.5)
            return info.value, time.monotonic() - t0
        finally:
            await b.aclose()

    for model, stream in (("stall", False), ("stall", True), ("stall-stream", True)):
        err, elapsed = asyncio.run(go(model, stream))
        assert err.timeout and err.status is None, (model, stream, err)
        assert elapsed < 3, (model, stream, elapsed)


def test_http_connection_refused():
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        b = _backend(f"http://127.0.0.1:{port}/v1", timeout_s=2)
        try:
            await b.chat(MSGS)
        finally:
            await b.aclose()

    with pytest.raises(BackendError, match="ConnectError") as info:
        asyncio.run(go())
    assert not info.value.timeout


def test_build_backend_http_reads_key_at_start(server, monkeypatch):
    url, seen = server
    cfg = ModelConfig(name="r", backend="openai", endpoint=url, model="ok", api_key_env="TIERWISE_TEST_KEY2",
                      input_per_1m=1, output_per_1m=1)
    monkeypatch.delenv("TIERWISE_TEST_KEY2", raising=False)
    from tierwise.config import ConfigError

    with pytest.raises(ConfigError, match="TIERWISE_TEST_KEY2 is not set"):
        build_backend(cfg)
    monkeypatch.setenv("TIERWISE_TEST_KEY2", "sk-2")
    b = build_backend(cfg)

    async def go():
        try:
            return await b.chat(MSGS)
        finally:
            await b.aclose()

    assert asyncio.run(go()).text == "Hello there!"
    assert seen[-1]["auth"] == "Bearer sk-2"


# ---- the real SmolLM2 in llama.cpp ---------------------------------------------------------


def _smollm2_path():
    from tierwise.weights import WeightsError, model_path

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip("llama-cpp-python not installed (scripts/setup.sh)")
    try:
        return model_path("smollm2-135m")
    except WeightsError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def llama():
    from tierwise.backends.llama_local import LlamaBackend

    b = LlamaBackend("smollm2-135m", _smollm2_path(), context_window=1024, n_threads=2, timeout_s=60)
    yield b
    asyncio.run(b.aclose())


PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
MC = [
    {"role": "system", "content": "Answer with the letter of the correct option only."},
    {"role": "user", "content": "Which animal barks?\nA. cat\nB. dog\nC. fish\nD. bird\nAnswer:"},
]


@pytest.mark.slow
def test_llama_chat_stream_and_counts_agree(llama):
    async def go():
        r = await llama.chat(PROMPT, max_tokens=24)
        deltas = [d async for d in llama.stream(PROMPT, max_tokens=24)]
        again = await llama.chat(PROMPT, max_tokens=24)
        return r, deltas, again

    r, deltas, again = asyncio.run(go())
    assert r.text.strip() and r.text == again.text  # greedy is deterministic
    assert 0 < r.tokens_out <= 24 and r.finish_reason in ("stop", "length")
    assert r.tokens_in == llama.count_tokens(PROMPT)
    assert "".join(d.text for d in deltas) == r.text
    assert len(deltas) > 2, "stream should arrive in pieces"
    last = deltas[-1]
    assert (last.finish_reason, last.tokens_in, last.tokens_out) == (r.finish_reason, r.tokens_in, r.tokens_out)
    assert "Paris" in r.text


@pytest.mark.slow
def test_llama_count_tokens_uses_template_and_tokenizer(llama):
    short = llama.count_tokens([{"role": "user", "content": "hi"}])
    long = llama.count_tokens([{"role": "user", "content": "hi " * 50}])
    sys1 = llama.count_tokens([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    sys2 = llama.count_tokens([{"role": "system", "content": "Be brief. " * 5}, {"role": "user", "content": "hi"}])
    assert 1 < short < long and 1 < sys1 < sys2
    assert long - short >= 45  # ~one token per repeated word
    # the chat template's role markers count too: more than the bare text's tokens
    assert short > len(llama._first.tokenize(b"hi", add_bos=False)) + 2


@pytest.mark.slow
def test_llama_logprobs_and_first_token_top(llama):
    async def go():
        full = await llama.chat(PROMPT, max_tokens=12, logprobs=True, top_logprobs=5)
        mc = await llama.chat(MC, max_tokens=1, top_logprobs=5)
        return full, mc

    full, mc = asyncio.run(go())
    assert len(full.token_logprobs) == full.tokens_out
    assert all(lp <= 1e-6 for lp in full.token_logprobs)
    top = full.first_token_top
    assert len(top) == 5 and sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-6
    # greedy picks the argmax, so the first token's logprob is the best alternative's
    assert full.token_logprobs[0] == pytest.approx(max(top.values()), abs=1e-4)
    assert mc.tokens_out == 1 and mc.token_logprobs is None
    assert len(mc.first_token_top) == 5
    letters = {k.strip(): v for k, v in mc.first_token_top.items() if k.strip() in "ABCD" and k.strip()}
    assert letters, f"no option letter among the top tokens: {mc.first_token_top}"


@pytest.mark.slow
def test_llama_stop_strings(llama):
    async def go():
        base = await llama.chat(PROMPT, max_tokens=24)
        word = base.text.split()[2]
        cut = await llama.chat(PROMPT, max_tokens=24, stop=[word])
        streamed = "".join([d.text async for d in llama.stream(PROMPT, max_tokens=24, stop=[word])])
        return base, word, cut, streamed

    base, word, cut, streamed = asyncio.run(go())
    assert cut.text == base.text[: base.text.index(word)] and cut.finish_reason == "stop"
    assert streamed == cut.text


@pytest.mark.slow
def test_llama_concurrent_calls_queue_without_blocking_loop(llama):
    async def go():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        t0 = time.monotonic()
        results = await asyncio.gather(*(llama.chat(PROMPT, max_tokens=16) for _ in range(4)))
        elapsed = time.monotonic() - t0
        stop.set()
        await t
        return results, ticks, elapsed

    results, ticks, elapsed = asyncio.run(go())
    assert len({r.text for r in results}) == 1  # same greedy answer: no state leaked between requests
    assert ticks >= 0.3 * elapsed / 0.01, f"event loop was blocked: {ticks} ticks in {elapsed:.2f}s"
    # one model copy: the calls queued and ran one after another, so their latencies (queueing
    # included) step up: the first done in about a quarter of the time the last one waited
    lat = sorted(r.latency_s for r in results)
    assert lat[0] < 0.5 * lat[-1], lat


@pytest.mark.slow
def test_llama_timeout_and_recovery(llama):
    # a request that cannot finish in time: hundreds of tokens asked for, 50 ms allowed (a short
    # answer could otherwise end with EOS inside the budget on a fast machine)
    long = [{"role": "user", "content": "Count from 1 to 500, separated by commas, and nothing else."}]

    async def go():
        with pytest.raises(BackendError) as info:
            await llama.chat(long, max_tokens=400, timeout=0.05)
        with pytest.raises(BackendError) as info2:
            async for _ in llama.stream(long, max_tokens=400, timeout=0.05):
                pass
        # a consumer that leaves early frees the slot too
        agen = llama.stream(PROMPT, max_tokens=400)
        async for _ in agen:
            break
        await agen.aclose()
        ok = await asyncio.wait_for(llama.chat(PROMPT, max_tokens=4), 30)
        return info.value, info2.value, ok

    e1, e2, ok = asyncio.run(go())
    assert e1.timeout and e2.timeout
    assert ok.tokens_out == 4


@pytest.mark.slow
def test_llama_prompt_longer_than_context(llama):
    with pytest.raises(BackendError, match="context window is 1024") as info:
        asyncio.run(llama.chat([{"role": "user", "content": "word " * 2000}]))
    assert info.value.status == 400


@pytest.mark.slow
def test_build_backend_from_default_pyramid():
    _smollm2_path()
    cfg = default_pyramid().model("smollm2-135m").model_copy(update={"context_window": 512})
    b = build_backend(cfg)
    try:
        r = asyncio.run(b.chat(MSGS, max_tokens=4))
        assert r.tokens_out == 4 and b.context_window == 512
    finally:
        asyncio.run(b.aclose())


def test_llama_missing_file_is_clear(tmp_path):
    pytest.importorskip("llama_cpp")
    from tierwise.backends.llama_local import LlamaBackend

    with pytest.raises(BackendError, match="model file not found"):
        LlamaBackend("x", tmp_path / "none.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(BackendError, match="cannot load GGUF"):
        LlamaBackend("x", bad)
