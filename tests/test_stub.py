"""The stub backend itself (``tierwise.testing.StubBackend``), straight over HTTP: no gateway.

The gateway tests trust the stub to record exactly what arrived and to answer like OpenAI does
(tool calls streamed in fragments, error bodies, usage only when asked), so it is tested here on its
own, with httpx, the ``openai`` SDK and LangChain talking to it directly.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Literal, Optional

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tierwise.testing import StubBackend, schema_example, tool_call_arguments

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]},
        "detail": {"type": "boolean"}}, "required": ["city", "days", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                       "required": ["tz"]}}}


@pytest.fixture()
def stub(stub):  # the session stub from conftest, emptied for each test
    stub.reset()
    return stub


def _post(stub, body: dict, **kw) -> httpx.Response:
    return httpx.post(stub.url + "/chat/completions", json=body, timeout=10, **kw)


def _sse(r: httpx.Response) -> list[dict]:
    events = r.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    return [json.loads(e[len("data: "):]) for e in events[:-2]]


def _msgs(text: str = "hello") -> list[dict]:
    return [{"role": "user", "content": text}]


# -- recording ---------------------------------------------------------------------------------------


def test_records_exactly_what_arrived_and_reset_clears(stub):
    body = {"model": "echo", "messages": _msgs("Grüße, 世界 🌍"), "seed": 7, "x_unknown": {"a": [1, None]}}
    r = _post(stub, body, headers={"x-test": "yes"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: Grüße, 世界 🌍"
    (req,) = stub.requests
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["body"] == body and req["headers"]["x-test"] == "yes"
    assert req["response"] == {"status": 200, "body": r.json()}
    assert stub.calls == {"echo": 1} and stub.bodies() == [body]
    stub.requests.clear()  # a snapshot: clearing it does not touch the stub's record
    assert len(stub.requests) == 1
    stub.reset()
    assert stub.requests == [] and stub.calls == {}


def test_large_unicode_body_and_keep_alive(stub):
    big = "näïve 日本語 " * 60000  # ~1 MB of UTF-8
    with httpx.Client(timeout=10) as c:
        for i in range(3):  # one connection, several requests
            r = c.post(stub.url + "/chat/completions", json={"model": "echo", "messages": _msgs(f"{i} {big}")})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == f"echo: {i} {big}"
    assert [b["messages"][0]["content"] for b in stub.bodies()] == [f"{i} {big}" for i in range(3)]
    # raw keep-alive: two requests written back to back on one socket, both answered
    payload = json.dumps({"model": "echo", "messages": _msgs("ké")}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
    with socket.create_connection((stub.host, stub.port), timeout=5) as s:
        s.sendall(req + req)
        got, bodies = b"", []
        while len(bodies) < 2:
            data = s.recv(65536)
            assert data, "stub closed a keep-alive connection"
            got += data
            while b"\r\n\r\n" in got:
                head, _, rest = got.partition(b"\r\n\r\n")
                n = int(next(v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                             if k.lower() == b"content-length"))
                if len(rest) < n:
                    break
                assert head.startswith(b"HTTP/1.1 200 OK")
                bodies.append(json.loads(rest[:n]))
                got = rest[n:]
    assert [b["choices"][0]["message"]["content"] for b in bodies] == ["echo: ké", "echo: ké"]
    assert len(stub.requests) == 5


def test_records_requests_from_many_threads(stub):
    def send(i: int) -> None:
        _post(stub, {"model": "echo", "messages": _msgs(f"t{i}")})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(b["messages"][0]["content"] for b in stub.bodies()) == sorted(f"t{i}" for i in range(16))
    assert stub.calls == {"echo": 16}


def test_model_suffix_after_at_is_ignored_for_the_mode(stub):
    r = _post(stub, {"model": "echo@m3", "messages": _msgs("x")})
    assert r.json()["choices"][0]["message"]["content"] == "echo: x"
    assert stub.calls == {"echo@m3": 1}


# -- echo and usage in streams --------------------------------------------------------------------


def test_echo_stream_sends_usage_only_when_asked(stub):
    body = {"model": "echo", "messages": _msgs("a b"), "stream": True}
    chunks = _sse(_post(stub, body))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks)
    chunks = _sse(_post(stub, {**body, "stream_options": {"include_usage": True}}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert stub.requests[-1]["response"]["chunks"] == chunks


def test_confident_and_unsure_logprobs_unchanged(stub):
    for mode, lp in (("confident", -0.05), ("unsure", -3.0)):
        r = _post(stub, {"model": mode, "messages": _msgs("one two"), "logprobs": True, "top_logprobs": 1}).json()
        content = r["choices"][0]["logprobs"]["content"]
        assert [t["token"] for t in content] == ["echo:", " one", " two"] and {t["logprob"] for t in content} == {lp}
        assert len(content[0]["top_logprobs"]) == 1
    assert _post(stub, {"model": "confident", "messages": _msgs("x")}).json()["choices"][0]["logprobs"] is None


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 413, 422])
@pytest.mark.parametrize("stream", [False, True])
def test_reject_modes(stub, status, stream):
    r = _post(stub, {"model": f"reject-{status}", "messages": _msgs(), "stream": stream})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.json() == StubBackend.reject_body(f"reject-{status}")
    err = r.json()["error"]
    assert err["message"].startswith("stub rejects: ") and err["type"] == "invalid_request_error"
    assert err["param"] is None and err["code"] == "stub_rejected"


def test_fail_and_ratelimit(stub):
    r = _post(stub, {"model": "fail", "messages": _msgs()})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    r = _post(stub, {"model": "ratelimit", "messages": _msgs(), "stream": True})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert stub.calls == {"fail": 1, "ratelimit": 1}


def test_stall_after_first_records_what_was_sent(stub):
    with httpx.stream("POST", stub.url + "/chat/completions", timeout=10,
                      json={"model": "stall-after-first", "messages": _msgs("a b"), "stream": True}) as r:
        first = next(r.iter_lines())
    assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "echo:"
    assert len(stub.requests[0]["response"]["chunks"]) == 1


# -- tools mode ------------------------------------------------------------------------------------


def test_tools_non_stream_calls_the_first_tool_with_schema_arguments(stub):
    r = _post(stub, {"model": "tools", "messages": _msgs("weather in Paris?"), "tools": [WEATHER, TIME]}).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["content"] is None and "content" in msg
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 3, "unit": "c"}
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]


def test_tools_honours_tool_choice(stub):
    body = {"model": "tools", "messages": _msgs("time?"), "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}}
    call = _post(stub, body).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_time" and json.loads(call["function"]["arguments"]) == {"tz": "Paris"}
    r = _post(stub, {**body, "tool_choice": "none"}).json()["choices"][0]
    assert r["message"]["content"] == "echo: time?" and r["finish_reason"] == "stop" and "tool_calls" not in r["message"]


def test_tools_stream_splits_the_call_like_openai(stub):
    body = {"model": "tools", "messages": _msgs("w"), "tools": [WEATHER], "stream": True,
            "stream_options": {"include_usage": True}}
    chunks = _sse(_post(stub, body))
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    (tc,) = first["tool_calls"]
    assert tc["index"] == 0 and tc["id"].startswith("call_") and tc["type"] == "function"
    assert tc["function"] == {"name": "get_weather", "arguments": ""}
    frags = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:] if c["choices"] and
             c["choices"][0]["delta"].get("tool_calls")]
    assert len(frags) >= 3 and all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"}
                                   for f in frags)
    args = "".join(f["function"]["arguments"] for f in frags)
    assert json.loads(args) == {"city": "Paris", "days": 3, "unit": "c"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_tools_json_schema_and_json_object(stub):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    r = _post(stub, {"model": "tools", "messages": _msgs("who?"), "response_format": fmt}).json()
    assert json.loads(r["choices"][0]["message"]["content"]) == {"name": "Paris", "age": 3, "tags": ["Paris"]}
    chunks = _sse(_post(stub, {"model": "tools", "messages": _msgs("who?"), "response_format": fmt, "stream": True}))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(text) == {"name": "Paris", "age": 3, "tags": ["Paris"]}
    r = _post(stub, {"model": "tools", "messages": _msgs("hi"), "response_format": {"type": "json_object"}}).json()
    assert json.loads(r["choices"][0]["message"]["content"]) == {"echo": "hi"}
    r = _post(stub, {"model": "tools", "messages": _msgs("plain")}).json()
    assert r["choices"][0]["message"]["content"] == "echo: plain"


class _Address(BaseModel):
    street: str
    zip_code: int = Field(ge=10000)


class _Person(BaseModel):
    name: str
    age: int
    height_m: float
    admin: bool
    kind: Literal["a", "b"]
    nick: Optional[str]
    address: _Address
    friends: list[_Address]
    note: str = "x"


def test_schema_example_follows_refs_unions_and_bounds():
    from pydantic import TypeAdapter

    schema = _Person.model_json_schema()
    value = schema_example(schema)
    _Person.model_validate(value)  # valid against the pydantic model the schema came from
    assert value["address"] == {"street": "Paris", "zip_code": 10001} and "note" not in value
    assert value["nick"] == "Paris" and value["kind"] == "a" and value["friends"] == [value["address"]]
    assert schema_example({"type": ["null", "integer"]}) == 3
    assert schema_example({"type": "string", "format": "date"}) == "2024-05-01"
    assert schema_example({"type": "array", "items": {"type": "number"}, "minItems": 2}) == [2.5, 2.5]
    TypeAdapter(list[_Address]).validate_python(schema_example(TypeAdapter(list[_Address]).json_schema()))
    assert tool_call_arguments({"type": "function", "function": {"name": "f"}}) == {}


# -- rich mode -------------------------------------------------------------------------------------


def test_rich_carries_every_passthrough_field(stub):
    r = _post(stub, {"model": "rich", "messages": _msgs("a b"), "top_logprobs": 2, "logprobs": True}).json()
    assert r["system_fingerprint"] == "fp_stub" and r["service_tier"] == "default" and r["model"] == "rich"
    msg = r["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "echo: a b", "refusal": None, "annotations": [], "x_stub_extra": 1}
    lp = r["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in lp] == ["echo:", " a", " b"] and len(lp[0]["top_logprobs"]) == 2
    assert r["usage"]["prompt_tokens_details"] == {"cached_tokens": 1, "audio_tokens": 0}
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    chunks = _sse(_post(stub, {"model": "rich", "messages": _msgs("a b"), "stream": True,
                               "stream_options": {"include_usage": True}}))
    assert all(c["system_fingerprint"] == "fp_stub" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[1]["choices"][0]["delta"]["x_stub_extra"] == 1 and chunks[1]["choices"][0]["logprobs"]["content"]
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


# -- real clients against the stub ---------------------------------------------------------------


def test_openai_sdk_parses_the_stub(stub):
    c = openai.OpenAI(base_url=stub.url, api_key="x", max_retries=0, timeout=10)
    r = c.chat.completions.create(model="tools", messages=_msgs("w"), tools=[WEATHER])
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    calls: dict[int, dict] = {}
    for ch in c.chat.completions.create(model="tools", messages=_msgs("w"), tools=[WEATHER], stream=True):
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            d = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            d["name"] += (tc.function.name or "") if tc.function else ""
            d["arguments"] += (tc.function.arguments or "") if tc.function else ""
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"])["city"] == "Paris"
    with pytest.raises(openai.BadRequestError, match="stub rejects"):
        c.chat.completions.create(model="reject-400", messages=_msgs())
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="reject-404", messages=_msgs())
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="ratelimit", messages=_msgs())
    r = c.chat.completions.create(model="rich", messages=_msgs("q"))
    assert r.system_fingerprint == "fp_stub" and r.usage.completion_tokens_details.reasoning_tokens == 2


class _City(BaseModel):
    """A city and how many days of forecast."""

    city: str
    days: int


@pytest.mark.parametrize("method", [None, "json_schema", "function_calling"])
def test_langchain_against_the_stub_directly(stub, method):
    """What the gateway tests expect through the gateway holds when LangChain talks to the stub itself."""
    lc = pytest.importorskip("langchain_openai")
    llm = lc.ChatOpenAI(model="tools", base_url=stub.url, api_key="x", max_retries=0, timeout=10)
    kw = {} if method is None else {"method": method}
    out = llm.with_structured_output(_City, **kw).invoke("Paris for three days")
    assert out == _City(city="Paris", days=3)
    msg = llm.bind_tools([_City]).invoke("Paris for three days")
    assert [(t["name"], t["args"]) for t in msg.tool_calls] == [("_City", {"city": "Paris", "days": 3})]
