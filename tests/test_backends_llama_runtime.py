"""The llama.cpp backend at run time on the real SmolLM2: determinism, token counts, logprobs for the
offline tools' ``chat()``, stop strings, queueing without blocking the loop, timeouts, bad files."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from tierwise.backends import BackendError, StreamTally, build_backend
from tierwise.config import default_pyramid

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
MSGS = [{"role": "user", "content": "Say hello."}]


async def _streamed(backend, body, **kw) -> StreamTally:
    tally = StreamTally()
    async for chunk in backend.stream(body, **kw):
        tally.add(chunk)
    return tally
MC = [
    {"role": "system", "content": "Answer with the letter of the correct option only."},
    {"role": "user", "content": "Which animal barks?\nA. cat\nB. dog\nC. fish\nD. bird\nAnswer:"},
]


@pytest.mark.slow
def test_llama_chat_stream_and_counts_agree(llama):
    async def go():
        r = await llama.chat(PROMPT, max_tokens=24)
        tally = await _streamed(llama, {"messages": PROMPT, "max_tokens": 24, "temperature": 0,
                                        "stream_options": {"include_usage": True}})
        again = await llama.chat(PROMPT, max_tokens=24)
        return r, tally, again

    r, tally, again = asyncio.run(go())
    assert r.text.strip() and r.text == again.text  # greedy is deterministic
    assert 0 < r.tokens_out <= 24 and r.finish_reason in ("stop", "length")
    assert r.tokens_in == llama.count_tokens(PROMPT)
    assert "".join(tally.text) == r.text
    assert tally.pieces > 2, "stream should arrive in pieces"
    assert (tally.finish_reason, tally.tokens_in, tally.tokens_out) == (r.finish_reason, r.tokens_in, r.tokens_out)
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
    assert mc.tokens_out == 1
    assert len(mc.first_token_top) == 5
    letters = {k.strip(): v for k, v in mc.first_token_top.items() if k.strip() in "ABCD" and k.strip()}
    assert letters, f"no option letter among the top tokens: {mc.first_token_top}"


@pytest.mark.slow
def test_llama_stop_strings(llama):
    async def go():
        base = await llama.chat(PROMPT, max_tokens=24)
        word = base.text.split()[2]
        cut = await llama.chat(PROMPT, max_tokens=24, stop=[word])
        streamed = "".join((await _streamed(llama, {"messages": PROMPT, "max_tokens": 24, "stop": [word]})).text)
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
            await _streamed(llama, {"messages": long, "max_tokens": 400}, timeout=0.05)
        # a consumer that leaves early frees the slot too
        agen = llama.stream({"messages": PROMPT, "max_tokens": 400})
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
