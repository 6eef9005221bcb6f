"""The OpenAI-compatible backend against a real OpenAI-shaped uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tierwise.backends import BackendError, UpstreamRejected, build_backend
from tierwise.backends.openai_http import OpenAIBackend
from tierwise.config import ModelConfig

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
        if model == "reject400":
            return JSONResponse({"error": {"message": "bad tools", "type": "invalid_request_error",
                                           "param": "tools", "code": "bad"}}, status_code=400)
        if model == "html404":
            return PlainTextResponse("<html>not here</html>", status_code=404)
        if model == "ratelimit":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if model == "json-not-sse" and body.get("stream"):
            return JSONResponse({"choices": []})
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
            return [d async for d in b.stream({"messages": MSGS})]
        finally:
            await b.aclose()

    chunks = asyncio.run(go())
    from tierwise.backends import StreamTally

    tally = StreamTally()
    for c in chunks:
        tally.add(c)
    assert "".join(tally.text) == "Hello there!" and tally.finish_reason == "stop"
    # no usage asked, none injected: the tally estimates from what was streamed
    assert tally.usage(11) == (11, 3, True)


def test_http_500_is_backend_error_with_status(server):
    url, _ = server

    async def go(stream: bool):
        b = _backend(url, "fail500", timeout_s=5)
        try:
            if stream:
                return [d async for d in b.stream({"messages": MSGS})]
            return await b.chat(MSGS)
        finally:
            await b.aclose()

    for stream in (False, True):
        with pytest.raises(BackendError) as info:
            asyncio.run(go(stream))
        assert info.value.upstream_status == 500 and not info.value.timeout
        assert "HTTP 500" in str(info.value) and "boom" in str(info.value)


def test_http_stall_times_out(server):
    url, _ = server

    async def go(model: str, stream: bool):
        b = _backend(url, model, timeout_s=30)
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendError) as info:
                if stream:
                    async for _ in b.stream({"messages": MSGS}, timeout=0.5):
                        pass
                else:
                    await b.chat(MSGS, timeout=0.5)
            return info.value, time.monotonic() - t0
        finally:
            await b.aclose()

    for model, stream in (("stall", False), ("stall", True), ("stall-stream", True)):
        err, elapsed = asyncio.run(go(model, stream))
        assert err.timeout and err.upstream_status is None, (model, stream, err)
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


def test_http_body_is_forwarded_unchanged_but_model(server):
    url, seen = server
    body = {"messages": MSGS, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "seed": 7, "x_unknown": {"a": [1, 2]}, "response_format": {"type": "json_object"}}

    async def go():
        b = _backend(url, timeout_s=5)
        try:
            return await b.complete(dict(body))
        finally:
            await b.aclose()

    c = asyncio.run(go())
    assert seen[-1]["body"] == {**body, "model": "ok"}  # nothing dropped, nothing injected
    assert c.body["id"] == "x" and c.tokens_in == 11 and not c.usage_estimated


def test_continue_final_message_reaches_only_servers_declared_to_take_it(server):
    """Hosted APIs refuse the field (a prefill from the Anthropic surface would be a 400); a server with the
    ``prefill`` capability (vLLM) gets it."""
    url, seen = server
    body = {"messages": MSGS + [{"role": "assistant", "content": "Well,"}], "continue_final_message": True}

    async def go(**kw):
        b = _backend(url, timeout_s=5, **kw)
        try:
            return await b.complete(dict(body))
        finally:
            await b.aclose()

    asyncio.run(go())
    assert "continue_final_message" not in seen[-1]["body"] and seen[-1]["body"]["messages"] == body["messages"]
    asyncio.run(go(capabilities=frozenset({"prefill"})))
    assert seen[-1]["body"]["continue_final_message"] is True


@pytest.mark.parametrize("model, rejected, status", [("reject400", True, 400), ("html404", False, 404),
                                                     ("ratelimit", False, 429), ("fail500", False, 500)])
def test_http_client_errors_are_the_clients(server, model, rejected, status):
    """A 4xx with an OpenAI error body is the request's fault (returned as-is); the rest fall back."""
    url, _ = server

    async def go(stream: bool):
        b = _backend(url, model, timeout_s=5)
        try:
            if stream:
                return [d async for d in b.stream({"messages": MSGS})]
            return await b.complete({"messages": MSGS})
        finally:
            await b.aclose()

    for stream in (False, True):
        with pytest.raises(BackendError) as info:
            asyncio.run(go(stream))
        assert isinstance(info.value, UpstreamRejected) is rejected and info.value.upstream_status == status
        assert "127.0.0.1" not in str(info.value)  # no backend address in what a client may see
        if rejected:
            assert info.value.status == 400 and info.value.body()["error"]["param"] == "tools"


def test_http_stream_answered_with_json_is_an_error(server):
    url, _ = server

    async def go():
        b = _backend(url, "json-not-sse", timeout_s=5)
        try:
            return [d async for d in b.stream({"messages": MSGS})]
        finally:
            await b.aclose()

    with pytest.raises(BackendError, match="asked for a stream"):
        asyncio.run(go())
