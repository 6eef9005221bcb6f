"""Gateway v2 fidelity: what a client sends reaches the model, and what the model answers reaches the client.

A real ``tierwise serve`` process in front of the recording stub backend (``tierwise.testing``),
driven by the real ``openai`` SDK (and raw httpx where the exact wire bytes matter). The stub records
every body it receives and every answer it gives, so the assertions compare whole bodies:

* upstream: the client's body exactly, only ``model`` replaced by the backend's remote model id;
  nothing injected (``temperature``, ``max_tokens``, ``stream_options``), nothing dropped
  (``tools``, ``tool_choice``, ``response_format``, ``seed``, ``top_p``, ``logprobs``, ``user``,
  unknown extra fields, tool-call follow-up turns, content parts with images);
* downstream: the backend's answer exactly (``tool_calls`` in bodies and stream deltas,
  ``logprobs``, ``system_fingerprint``, ``refusal``, ``usage`` details, unknown fields, ``id``,
  ``created``), only ``model`` set to the answering pyramid model (the gateway's own request id is
  the ``x-request-id`` header, which is also the decision-log row's id);
* an upstream 400/404/413/422 with an OpenAI error body is the client's error: returned as-is after
  exactly one backend call; 500, 429 and timeouts still fall back to the next model;
* capabilities: a request needing ``vision`` on a text-only pyramid is a 400
  ``unsupported_capability``; a request with ``tools`` is routed only among models declaring ``tools``;
* ``GET /v1/models/{id}``.
"""

from __future__ import annotations

import copy
import json

import httpx
import openai
import pytest

from tierwise.testing import StubBackend, tool_call_arguments

ALL_CAPS = ["tools", "json_object", "json_schema", "vision", "logprobs", "n"]
# the gateway sets only this on the answer (the pyramid model's name); everything else, ``id`` and
# ``created`` included, must be the backend's, unchanged (the gateway's own id is ``x-request-id``)
GATEWAY_OWNED = ("model",)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "city name"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "days", "unit"], "additionalProperties": False},
    "strict": True}}
LOOKUP = {"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
ANSWER_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "answer", "strict": True,
    "schema": {"type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
               "required": ["answer", "confidence"], "additionalProperties": False}}}
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
       "AAAABJRU5ErkJggg==")
IMAGE_MSG = {"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]}


# -- helpers ---------------------------------------------------------------------------------------


def _without(obj: dict, keys=GATEWAY_OWNED) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


def _sse(text: str) -> list[dict]:
    """The JSON events of an SSE body that must end with ``data: [DONE]``."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events and events[-1] == "data: [DONE]", text[-300:]
    out = []
    for e in events[:-1]:
        assert e.startswith("data: "), e
        out.append(json.loads(e[len("data: "):]))
    return out


def _post(gw, body: dict, **kw) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=body, timeout=30, **kw)


def _only_request(stub: StubBackend) -> dict:
    reqs = stub.requests
    assert len(reqs) == 1, f"expected exactly one backend call, got {[r['body'].get('model') for r in reqs]}"
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == "/v1/chat/completions"
    return reqs[0]


def _assert_error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"]
    return err


class _Capture:
    """An httpx client for the openai SDK that keeps every JSON body the SDK sent."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.http = httpx.Client(timeout=30, event_hooks={"request": [self._hook]})

    def _hook(self, request: httpx.Request) -> None:
        if request.method == "POST":
            self.bodies.append(json.loads(request.read()))

    def sent(self) -> dict:
        assert len(self.bodies) == 1, self.bodies
        return self.bodies[0]


# -- gateways ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fid_gw(stub, gateway):
    """m0 calls tools, m1 answers with every pass-through field, m2 echoes; all declare every capability."""
    return gateway(stub.url, ("tools@fid0", "rich@fid1", "echo@fid2"), capabilities=[ALL_CAPS] * 3,
                   context_window=1_000_000, label="fidelity")


@pytest.fixture(scope="module")
def reject_gw(stub, gateway):
    """m0..m3 refuse every request with 400/404/413/422 and an OpenAI error body; m4 would answer."""
    return gateway(stub.url, ("reject-400", "reject-404", "reject-413", "reject-422", "echo@rej4"), label="reject")


@pytest.fixture(scope="module")
def all_reject_gw(stub, gateway):
    """Every model refuses (each with its own status), so whichever the router picks must be the only call."""
    return gateway(stub.url, ("reject-400@ar0", "reject-422@ar1", "reject-404@ar2"), label="allreject")


@pytest.fixture(scope="module")
def fault_gw(stub, gateway):
    """m0 answers 500, m1 answers 429, m2 never answers (1 s timeout), m3 works."""
    return gateway(stub.url, ("fail", "ratelimit", "stall", "echo@flt3"), timeout_s=1.0, label="fault")


@pytest.fixture(scope="module")
def text_gw(stub, gateway):
    """Two openai-backend models with the default capabilities: no vision."""
    return gateway(stub.url, ("echo@txt0", "echo@txt1"), label="textonly")


@pytest.fixture(scope="module")
def tools_gw(stub, gateway):
    """Only m1 and m3 declare ``tools``."""
    return gateway(stub.url, ("echo@cap0", "tools@cap1", "echo@cap2", "tools@cap3"),
                   capabilities=[["json_object"], ["tools"], ["json_object", "json_schema"], ["tools", "json_object"]],
                   label="toolsubset")


# -- the request body reaches the backend unchanged ------------------------------------------------


def test_request_body_reaches_backend_exactly_and_tool_call_comes_back(fid_gw, fresh_stub):
    cap = _Capture()
    client = fid_gw.client(http_client=cap.http)
    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Weather in Paris for 3 days? Grüße, 東京 ✓", "name": "alice"}]
    raw = client.chat.completions.with_raw_response.create(
        model="m0", messages=messages, tools=[WEATHER, LOOKUP],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False,
        response_format=ANSWER_FORMAT, seed=7, top_p=0.9, logprobs=True, top_logprobs=2, user="user-42",
        metadata={"trace": "t-1"}, stop=["\n\nEND"], extra_body={"x_unknown_field": {"a": 1}})
    sent = cap.sent()
    assert sent["x_unknown_field"] == {"a": 1} and sent["model"] == "m0"  # the SDK sent what the test means

    req = _only_request(fresh_stub)
    got = req["body"]
    assert got["model"] == "tools@fid0"  # the backend's remote model id
    assert _without(got, ("model",)) == _without(sent, ("model",))
    for injected in ("temperature", "max_tokens", "max_completion_tokens", "stream", "stream_options", "n"):
        assert injected not in got

    # the answer: the backend's body with the pyramid model's name
    resp = raw.parse()
    assert raw.headers["x-tierwise-model"] == "m0" and resp.model == "m0"
    body = raw.http_response.json()
    stub_body = req["response"]["body"]
    assert body["model"] == "m0"
    assert _without(body) == _without(stub_body)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id == stub_body["choices"][0]["message"]["tool_calls"][0]["id"]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == tool_call_arguments(WEATHER) == {
        "city": "Paris", "days": 3, "unit": "celsius"}
    assert resp.usage.total_tokens == stub_body["usage"]["total_tokens"]


@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "no_stream_options"])
def test_streamed_tool_call_deltas_pass_through(fid_gw, fresh_stub, include_usage):
    body = {"model": "m0", "messages": [{"role": "user", "content": "weather?"}], "stream": True,
            "tools": [WEATHER], "tool_choice": "auto", "seed": 1, "x_extra": [1, "two"]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = _post(fid_gw, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-tierwise-model"] == "m0"
    chunks = _sse(r.text)

    req = _only_request(fresh_stub)
    assert req["body"] == {**body, "model": "tools@fid0"}  # stream_options only when the client sent it
    stub_chunks = req["response"]["chunks"]
    assert [_without(c) for c in chunks] == [_without(c) for c in stub_chunks]
    assert {c["model"] for c in chunks} == {"m0"} and {c["id"] for c in chunks} == {stub_chunks[0]["id"]}

    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["id"].startswith("call_") and first["function"] == {"name": "get_weather", "arguments": ""}
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert json.loads(args) == tool_call_arguments(WEATHER)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    if include_usage:
        assert chunks[-1]["choices"] == [] and usage == [stub_chunks[-1]["usage"]]
    else:
        assert usage == []  # nothing asked, nothing invented


def test_sdk_stream_accumulates_the_tool_call(fid_gw, fresh_stub):
    client = fid_gw.client()
    calls: dict[int, dict] = {}
    finish, models = None, set()
    for ch in client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "weather?"}],
                                             tools=[WEATHER], stream=True):
        models.add(ch.model)
        for choice in ch.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                d = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                d["id"] = tc.id or d["id"]
                if tc.function:
                    d["name"] += tc.function.name or ""
                    d["arguments"] += tc.function.arguments or ""
    assert models == {"m0"} and finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == tool_call_arguments(WEATHER)
    assert "stream_options" not in _only_request(fresh_stub)["body"]


def test_json_schema_response_format_passes_through(fid_gw, fresh_stub):
    client = fid_gw.client()
    resp = client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "answer me"}],
                                          response_format=ANSWER_FORMAT)
    assert json.loads(resp.choices[0].message.content) == {"answer": "Paris", "confidence": 2.5}
    assert _only_request(fresh_stub)["body"]["response_format"] == ANSWER_FORMAT


# -- every field of the answer reaches the client --------------------------------------------------


def test_rich_answer_fields_pass_through(fid_gw, fresh_stub):
    client = fid_gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "tell me"}], logprobs=True, top_logprobs=2)
    req = _only_request(fresh_stub)
    assert req["body"] == {"model": "rich@fid1", "messages": [{"role": "user", "content": "tell me"}],
                           "logprobs": True, "top_logprobs": 2}
    body, stub_body = raw.http_response.json(), req["response"]["body"]
    assert body["model"] == "m1" and raw.headers["x-tierwise-model"] == "m1"
    assert _without(body) == _without(stub_body)
    # spelled out, so a failure says which field was lost
    assert body["system_fingerprint"] == "fp_stub" and body["service_tier"] == "default"
    msg = body["choices"][0]["message"]
    assert "refusal" in msg and msg["refusal"] is None and msg["x_stub_extra"] == 1 and msg["annotations"] == []
    assert body["choices"][0]["logprobs"] == stub_body["choices"][0]["logprobs"]
    assert len(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
    assert body["usage"] == stub_body["usage"]
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 1, "audio_tokens": 0}
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    resp = raw.parse()
    assert resp.system_fingerprint == "fp_stub" and resp.choices[0].message.refusal is None
    assert resp.usage.prompt_tokens_details.cached_tokens == 1
    assert resp.choices[0].logprobs.content[0].token == "echo:"


def test_rich_stream_fields_pass_through(fid_gw, fresh_stub):
    body = {"model": "m1", "messages": [{"role": "user", "content": "a b c"}], "stream": True,
            "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 1}
    r = _post(fid_gw, body)
    assert r.status_code == 200 and r.headers["x-tierwise-model"] == "m1"
    chunks = _sse(r.text)
    req = _only_request(fresh_stub)
    assert req["body"] == {**body, "model": "rich@fid1"}
    assert [_without(c) for c in chunks] == [_without(c) for c in req["response"]["chunks"]]
    assert all(c["system_fingerprint"] == "fp_stub" and c["model"] == "m1" for c in chunks)
    assert chunks[1]["choices"][0]["delta"]["x_stub_extra"] == 1
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: a b c"
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


# -- conversations arrive intact -------------------------------------------------------------------


FOLLOW_UP = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": [{"type": "text", "text": "Weather where this photo was taken? 📷"},
                                 {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}}],
     "name": "alice"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":1,\"unit\":\"celsius\"}"}}]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": [{"type": "text", "text": "{\"temp_c\": 21}"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "21 °C in Paris."}], "refusal": None},
    {"role": "user", "content": "And tomorrow?"},
]


@pytest.mark.parametrize("model", ["m2", "tierwise"])
def test_tool_call_follow_up_turn_arrives_intact(fid_gw, fresh_stub, model):
    body = {"model": model, "messages": copy.deepcopy(FOLLOW_UP), "tools": [WEATHER],
            "tool_choice": "none", "top_p": 0.5}
    r = _post(fid_gw, body)
    assert r.status_code == 200, r.text
    answered = r.headers["x-tierwise-model"]
    assert r.json()["model"] == answered and (answered == "m2" if model == "m2" else answered in {"m0", "m1", "m2"})
    remote = {"m0": "tools@fid0", "m1": "rich@fid1", "m2": "echo@fid2"}[answered]
    got = _only_request(fresh_stub)["body"]
    assert got == {**body, "model": remote}
    assert got["messages"] == FOLLOW_UP


def test_large_unicode_body_arrives_intact(fid_gw, fresh_stub):
    text = "Ünïcødé 東京 🌍 " * 20000  # ~0.3 MB of UTF-8
    body = {"model": "m2", "messages": [{"role": "user", "content": text}]}
    r = _post(fid_gw, body)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["choices"][0]["message"]["content"] == f"echo: {text}"
    assert _only_request(fresh_stub)["body"] == {**body, "model": "echo@fid2"}


# -- upstream rejections are the client's errors; failures still fall back --------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model, status", [("m0", 400), ("m1", 404), ("m2", 413), ("m3", 422)])
def test_upstream_rejection_returned_as_is_after_one_call(reject_gw, fresh_stub, model, status, stream):
    body = {"model": model, "messages": [{"role": "user", "content": "refuse me"}], "stream": stream}
    r = _post(reject_gw, body)
    assert r.status_code == status, r.text
    assert r.json() == StubBackend.reject_body(f"reject-{status}")
    req = _only_request(fresh_stub)  # no retry, no fallback to m4 (which would have answered)
    assert req["body"]["model"] == f"reject-{status}"
    row = reject_gw.row(r.headers["x-request-id"])
    assert row["status"] == status and row["fallbacks"] == []


def test_upstream_rejection_raises_the_typed_sdk_error(reject_gw, fresh_stub):
    client = reject_gw.client()
    with pytest.raises(openai.BadRequestError) as e400:
        client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "x"}])
    assert e400.value.code == "stub_rejected" and "stub rejects" in e400.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="m3", messages=[{"role": "user", "content": "x"}])
    assert [r["body"]["model"] for r in fresh_stub.requests] == ["reject-400", "reject-404", "reject-422"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_routed_rejection_is_not_retried_on_other_models(all_reject_gw, fresh_stub, stream):
    r = _post(all_reject_gw, {"model": "tierwise", "messages": [{"role": "user", "content": "no"}], "stream": stream})
    req = _only_request(fresh_stub)
    mode = req["body"]["model"].split("@")[0]
    assert r.status_code == StubBackend.REJECT[mode] and r.json() == StubBackend.reject_body(mode)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_500_429_and_timeout_still_fall_back(fault_gw, fresh_stub, stream):
    body = {"model": "m0", "messages": [{"role": "user", "content": "hi"}], **({"stream": True} if stream else {})}
    r = _post(fault_gw, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-tierwise-model"] == "m3" and r.headers["x-tierwise-fallbacks"] == "m0,m1,m2"
    if stream:
        chunks = _sse(r.text)
        assert {c["model"] for c in chunks} == {"m3"}
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: hi"
    else:
        assert r.json()["model"] == "m3" and r.json()["choices"][0]["message"]["content"] == "echo: hi"
    # each model called once: a 429 is a fallback, not a retry loop on the same model
    assert [q["body"]["model"] for q in fresh_stub.requests] == ["fail", "ratelimit", "stall", "echo@flt3"]
    assert all(_without(q["body"], ("model",)) == _without(body, ("model",)) for q in fresh_stub.requests)
    row = fault_gw.row(r.headers["x-request-id"])
    assert row["model"] == "m3" and row["status"] == 200
    assert [f["model"] for f in row["fallbacks"]] == ["m0", "m1", "m2"]
    assert row["fallbacks"][2]["reason"] == "timeout"


def test_429_alone_falls_back(fault_gw, fresh_stub):
    raw = fault_gw.client().chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "busy?"}])
    assert raw.parse().model == "m3" and raw.headers["x-tierwise-model"] == "m3"
    assert "m1" in raw.headers["x-tierwise-fallbacks"].split(",")
    assert fresh_stub.calls.get("ratelimit") == 1 and fresh_stub.calls.get("echo@flt3") == 1


# -- capabilities ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", ["tierwise", "m0"])
def test_vision_on_a_text_only_pyramid_is_400(text_gw, fresh_stub, model, stream):
    ok = _post(text_gw, {"model": model, "messages": [{"role": "user", "content": "text is fine"}]})
    assert ok.status_code == 200, ok.text  # the pyramid works; only the image is refused
    fresh_stub.reset()
    r = _post(text_gw, {"model": model, "messages": [IMAGE_MSG], "stream": stream})
    err = _assert_error_shape(r, 400)
    assert err["code"] == "unsupported_capability" and err["type"] == "invalid_request_error"
    assert "vision" in err["message"]
    lacking = ["m0", "m1"] if model == "tierwise" else ["m0"]
    assert all(m in err["message"] for m in lacking), err["message"]
    assert fresh_stub.requests == []  # refused before any model was called


def test_vision_refusal_is_a_typed_sdk_error(text_gw, fresh_stub):
    with pytest.raises(openai.BadRequestError) as exc:
        text_gw.client().chat.completions.create(model="tierwise", messages=[IMAGE_MSG])
    assert exc.value.code == "unsupported_capability" and "vision" in exc.value.message
    assert fresh_stub.requests == []


@pytest.mark.parametrize("model", ["tierwise", "tierwise:0", "tierwise:0.5", "tierwise:0.99"])
@pytest.mark.parametrize("prompt", ["weather?", "step 1: add 17 to 4211 and multiply by 3; " * 80],
                         ids=["short", "long_numeric"])
def test_tools_routed_only_among_models_that_declare_them(tools_gw, fresh_stub, model, prompt):
    raw = tools_gw.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], tools=[WEATHER])
    resp = raw.parse()
    assert resp.model in {"m1", "m3"} and raw.headers["x-tierwise-model"] == resp.model
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert [q["body"]["model"] for q in fresh_stub.requests] == [{"m1": "tools@cap1", "m3": "tools@cap3"}[resp.model]]
    row = tools_gw.row(raw.headers["x-request-id"])
    assert sorted(row["candidates"]) == ["m1", "m3"] and row["model"] == resp.model


def test_cheapest_tool_capable_model_at_knob_zero(tools_gw, fresh_stub):
    """Knob 0 (always the cheapest candidate) picks m0 for text but m1 once tools are needed."""
    create = tools_gw.client().chat.completions.with_raw_response.create
    plain = create(model="tierwise:0", messages=[{"role": "user", "content": "hi"}])
    assert plain.parse().model == "m0"
    assert sorted(tools_gw.row(plain.headers["x-request-id"])["candidates"]) == ["m0", "m1", "m2", "m3"]
    tooled = create(model="tierwise:0", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert tooled.parse().model == "m1" and tooled.parse().choices[0].finish_reason == "tool_calls"
    assert sorted(tools_gw.row(tooled.headers["x-request-id"])["candidates"]) == ["m1", "m3"]


# -- /v1/models/{id} -------------------------------------------------------------------------------


def test_models_retrieve(fid_gw):
    client = fid_gw.client()
    for mid in ("m0", "m2", "tierwise"):
        m = client.models.retrieve(mid)
        assert m.id == mid and m.object == "model"
    assert {m.id for m in client.models.list().data} >= {"tierwise", "m0", "m1", "m2"}


def test_models_retrieve_unknown_is_404(fid_gw):
    with pytest.raises(openai.NotFoundError):
        fid_gw.client().models.retrieve("no-such-model")
    r = httpx.get(fid_gw.base_url + "/models/no-such-model", timeout=10)
    err = _assert_error_shape(r, 404)
    assert err["code"] == "model_not_found" and "no-such-model" in err["message"]
