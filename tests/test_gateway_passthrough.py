"""``POST /v1/embeddings`` and legacy ``POST /v1/completions``: forwarded to one pyramid model, not routed.

A real ``tierwise serve`` process over the recording stub backend, driven by the real ``openai`` SDK
(raw httpx where the wire matters). What must hold, as on chat:

* the body reaches the model unchanged but ``model`` (unknown fields kept; the SDK's default
  ``encoding_format: "base64"`` passes through and the SDK decodes the stub's vectors), the answer
  comes back unchanged but ``model``; ``x-tierwise-*`` headers; one decision-log row per request
  (``surface``, tokens from usage, cost at the model's prices);
* ``model="tierwise"`` means the pyramid's ``default_<endpoint>_model`` (a 400 naming the key when
  none is set); a model without the endpoint's capability is a 400 ``unsupported_capability``;
* an upstream 400 comes back as-is after one call; completions fall back to the next
  completions-capable model on a 500 (streamed too), embeddings never (a 502 after one call);
* malformed bodies get OpenAI's error shape with a 4xx, never a traceback; client keys apply;
* ``tierwise stats --json`` counts the surfaces and keeps them out of the savings baseline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct

import httpx
import openai
import pytest

from tierwise.config import ConfigError, Pyramid
from tierwise.testing.stub_text import vector

NAMES = ["m0", "m1", "m2", "chat-only", "emb", "emb-fail", "emb-rej"]
MODES = ("fail@pt0", "echo@pt1", "reject-400@pt2", "echo@pt3", "echo@emb", "fail@embf", "reject-400@embr")
CAPS = [None, None, None, ["tools"], ["embeddings"], ["embeddings"], ["embeddings"]]
DEFAULTS = "default_embeddings_model: emb\ndefault_completions_model: m1\n"


@pytest.fixture(scope="module")
def gw(stub, gateway):
    return gateway(stub.url, MODES, names=NAMES, capabilities=CAPS, extra=DEFAULTS, label="passthrough")


@pytest.fixture(scope="module")
def bare_gw(stub, gateway):
    """No default models, client keys on (one with a rate limit), a short timeout (stalls fail fast)."""
    keys = "api_keys: [k1]\nkeys:\n  - name: team\n    key: team-key-1\n    requests_per_min: 2\n"
    return gateway(stub.url, ("echo@b0", "stall@b1", "stall@bemb"), names=["c0", "c1", "emb"],
                   capabilities=[None, None, ["embeddings"]], extra=keys, timeout_s=1.0, label="passthrough-bare")


def _price(gw, name: str) -> tuple[float, float]:
    m = Pyramid.load(gw.cfg).model(name)
    return m.input_per_1m, m.output_per_1m


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["message"] and "Traceback" not in err["message"]
    return err


def _post(gw, path: str, body, **kw) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        kw.setdefault("headers", {"content-type": "application/json"})
        return httpx.post(gw.base_url + path, content=body, timeout=30, **kw)
    return httpx.post(gw.base_url + path, json=body, timeout=30, **kw)


# -- embeddings ------------------------------------------------------------------------------------


def test_embeddings_sdk_body_forwarded_answer_returned(gw, fresh_stub):
    sent: list[dict] = []
    http = httpx.Client(timeout=30, event_hooks={"request": [lambda r: sent.append(json.loads(r.read()))]})
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", http_client=http, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="emb", input=["a", "b"], user="u-1",
                                                     extra_body={"x_unknown": {"k": 1}})
    r = raw.parse()
    (req,) = fresh_stub.requests
    assert req["path"] == "/v1/embeddings"
    assert req["body"] == {**sent[0], "model": "echo@emb"}  # unchanged but model
    assert sent[0]["encoding_format"] == "base64" and sent[0]["x_unknown"] == {"k": 1}
    upstream = req["response"]["body"]
    assert {**upstream, "model": "emb"} == raw.http_response.json()  # unchanged but model
    assert r.model == "emb" and [d.index for d in r.data] == [0, 1]
    assert r.data[0].embedding == pytest.approx(vector("a"), abs=1e-6)  # the SDK decoded the base64
    assert r.data[1].embedding == pytest.approx(vector("b"), abs=1e-6)
    h = raw.headers
    assert h["x-tierwise-model"] == "emb" and h["x-tierwise-router"] == "direct"
    assert h["x-tierwise-candidates"] == "emb" and "x-tierwise-fallbacks" not in h
    row = gw.row(h["x-request-id"])
    pin, _ = _price(gw, "emb")
    assert row["surface"] == "embeddings" and row["status"] == 200 and row["model"] == "emb"
    assert row["requested_model"] == "emb" and row["needs"] == ["embeddings"] and not row["stream"]
    assert row["tokens_in"] == r.usage.prompt_tokens == 2 and row["tokens_out"] == 0
    assert row["cost_usd"] == pytest.approx(2 * pin / 1e6) == pytest.approx(float(h["x-tierwise-cost-usd"]))
    assert not row["usage_estimated"] and row["key_hash"] is None


def test_embeddings_float_format_and_dimensions_pass_through(gw, fresh_stub):
    r = _post(gw, "/embeddings", {"model": "emb", "input": "hello", "encoding_format": "float", "dimensions": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"][0]["embedding"] == pytest.approx(vector("hello", 4))
    assert fresh_stub.bodies("/v1/embeddings") == [{"model": "echo@emb", "input": "hello",
                                                    "encoding_format": "float", "dimensions": 4}]
    b64 = _post(gw, "/embeddings", {"model": "emb", "input": "hello", "encoding_format": "base64"}).json()
    packed = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == pytest.approx(vector("hello"), abs=1e-6)


def test_token_id_inputs_are_forwarded(gw, fresh_stub):
    client = gw.client()
    r = client.embeddings.create(model="emb", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(r.data) == 2
    assert fresh_stub.bodies("/v1/embeddings")[0]["input"] == [[1, 2, 3], [4, 5]]


def test_tierwise_uses_the_default_embedding_model(gw, fresh_stub):
    raw = gw.client().embeddings.with_raw_response.create(model="tierwise", input="x")
    assert raw.parse().model == "emb" and raw.headers["x-tierwise-router"] == "default"
    assert fresh_stub.bodies("/v1/embeddings")[0]["model"] == "echo@emb"
    row = gw.row(raw.headers["x-request-id"])
    assert row["requested_model"] == "tierwise" and row["chosen"] == "emb" and row["router"] == "default"


@pytest.mark.parametrize("model", ["m1", "chat-only"])
def test_a_chat_model_named_for_embeddings_is_unsupported(gw, fresh_stub, model):
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().embeddings.create(model=model, input="x")
    err = e.value.body
    assert e.value.status_code == 400 and err["code"] == "unsupported_capability" and err["param"] == "model"
    assert f"'{model}'" in err["message"] and "emb" in err["message"]
    assert fresh_stub.requests == []
    row = gw.row(e.value.response.headers["x-request-id"])
    assert row["surface"] == "embeddings" and row["status"] == 400


def test_no_default_configured_names_the_key(bare_gw, fresh_stub):
    client = bare_gw.client(api_key="k1")
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="tierwise", input="x")
    assert "default_embeddings_model" in e.value.body["message"]
    assert e.value.body["code"] == "default_model_not_configured"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tierwise:0.5", prompt="x")
    assert "default_completions_model" in e.value.body["message"]
    assert fresh_stub.requests == []


def test_upstream_rejection_returned_as_is_after_one_call(gw, fresh_stub):
    r = _post(gw, "/embeddings", {"model": "emb-rej", "input": "x"})
    assert r.status_code == 400 and r.json() == fresh_stub.reject_body("reject-400")
    assert len(fresh_stub.requests) == 1
    r = _post(gw, "/completions", {"model": "m2", "prompt": "x"})
    assert r.status_code == 400 and r.json() == fresh_stub.reject_body("reject-400")
    assert len(fresh_stub.requests) == 2  # no fallback to another model


def test_embeddings_never_fall_back(gw, fresh_stub):
    r = _post(gw, "/embeddings", {"model": "emb-fail", "input": "x"})
    err = _error(r, 502)
    assert err["code"] == "backend_error" and "never retried" in err["message"]
    assert [q["body"]["model"] for q in fresh_stub.requests] == ["fail@embf"]  # emb was not tried
    row = gw.row(r.headers["x-request-id"])
    assert row["status"] == 502 and [f["model"] for f in row["fallbacks"]] == ["emb-fail"]


def test_a_stalled_embedding_model_times_out(bare_gw, fresh_stub):
    r = _post(bare_gw, "/embeddings", {"model": "emb", "input": "x"}, headers={"authorization": "Bearer k1"})
    err = _error(r, 502)
    assert "timed out" in err["message"] and len(fresh_stub.requests) == 1


def test_client_keys_apply(bare_gw, fresh_stub):
    assert _error(_post(bare_gw, "/embeddings", {"model": "emb", "input": "x"}), 401)["code"] == "invalid_api_key"
    assert _error(_post(bare_gw, "/completions", {"model": "c0", "prompt": "x"}), 401)
    r = bare_gw.client(api_key="k1").completions.with_raw_response.create(model="c0", prompt="hi", max_tokens=3)
    row = bare_gw.row(r.headers["x-request-id"])
    assert row["key_hash"] and row["surface"] == "completions" and fresh_stub.calls == {"echo@b0": 1}


def test_a_keys_rate_limit_counts_every_surface(bare_gw, fresh_stub):
    client = bare_gw.client(api_key="team-key-1")
    client.completions.create(model="c0", prompt="one")
    client.chat.completions.create(model="c0", messages=[{"role": "user", "content": "two"}])
    with pytest.raises(openai.RateLimitError) as e:  # the third request within the minute, on embeddings
        client.embeddings.create(model="emb", input="three")
    assert e.value.status_code == 429 and "retry-after" in e.value.response.headers
    assert [r["path"] for r in fresh_stub.requests] == ["/v1/completions", "/v1/chat/completions"]


# -- legacy completions ----------------------------------------------------------------------------


def test_completion_sdk_body_forwarded_answer_returned(gw, fresh_stub):
    client = gw.client()
    raw = client.completions.with_raw_response.create(model="m1", prompt="hi there", max_tokens=5, temperature=0,
                                                      extra_body={"x_unknown": 1})
    r = raw.parse()
    (req,) = fresh_stub.requests
    assert req["path"] == "/v1/completions"
    assert req["body"] == {"model": "echo@pt1", "prompt": "hi there", "max_tokens": 5, "temperature": 0,
                           "x_unknown": 1}
    assert raw.http_response.json() == {**req["response"]["body"], "model": "m1"}
    assert r.model == "m1" and r.object == "text_completion" and r.choices[0].text == "echo: hi there"
    assert raw.headers["x-tierwise-model"] == "m1" and raw.headers["x-tierwise-router"] == "direct"
    row = gw.row(raw.headers["x-request-id"])
    pin, pout = _price(gw, "m1")
    assert row["surface"] == "completions" and row["upstream_id"] == r.id and row["status"] == 200
    assert (row["tokens_in"], row["tokens_out"]) == (r.usage.prompt_tokens, r.usage.completion_tokens)
    assert row["cost_usd"] == pytest.approx((r.usage.prompt_tokens * pin + r.usage.completion_tokens * pout) / 1e6)
    assert row["candidates"] == ["m0", "m1", "m2"]  # the completions-capable models (not chat-only, not emb)


def test_completion_stream(gw, fresh_stub):
    client = gw.client()
    chunks = list(client.completions.create(model="tierwise", prompt="one two", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: one two"
    assert {c.model for c in chunks} == {"m1"} and chunks[-1].usage.completion_tokens == 3
    assert fresh_stub.bodies("/v1/completions")[0]["stream"] is True
    with httpx.stream("POST", gw.base_url + "/completions", json={"model": "m1", "prompt": "x", "stream": True},
                      timeout=30) as resp:
        text = resp.read().decode()
        rid = resp.headers["x-request-id"]
    assert resp.headers["content-type"].startswith("text/event-stream") and text.rstrip().endswith("data: [DONE]")
    row = gw.row(rid)
    assert row["stream"] and row["surface"] == "completions" and row["status"] == 200 and row["tokens_out"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_completion_falls_back_to_the_next_completions_model(gw, fresh_stub, stream):
    raw = gw.client().completions.with_raw_response.create(model="m0", prompt="p", stream=stream)
    if stream:
        text = "".join(c.choices[0].text for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].text
    assert text == "echo: p"
    assert raw.headers["x-tierwise-model"] == "m1" and raw.headers["x-tierwise-fallbacks"] == "m0"
    assert [q["body"]["model"] for q in fresh_stub.requests] == ["fail@pt0", "echo@pt1"]
    row = gw.row(raw.headers["x-request-id"])
    assert row["model"] == "m1" and row["fallbacks"][0]["model"] == "m0" and row["fallbacks"][0]["reason"] == "error"


def test_a_stalled_completion_model_falls_back_before_the_first_chunk(bare_gw, fresh_stub):
    client = bare_gw.client(api_key="k1")
    chunks = list(client.completions.create(model="c1", prompt="p", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: p" and chunks[0].model == "c0"


@pytest.mark.parametrize("model", ["chat-only", "emb"])
def test_completions_need_the_capability(gw, fresh_stub, model):
    err = _error(_post(gw, "/completions", {"model": model, "prompt": "x"}), 400)
    assert err["code"] == "unsupported_capability" and err["param"] == "model" and fresh_stub.requests == []


# -- malformed requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("path,body,param,code", [
    ("/embeddings", {"model": "emb"}, "input", "missing_required_parameter"),
    ("/embeddings", {"input": "x"}, "model", "missing_required_parameter"),
    ("/embeddings", {"model": "emb", "input": 3}, "input", "invalid_type"),
    ("/embeddings", {"model": "emb", "input": []}, "input", "invalid_value"),
    ("/embeddings", {"model": "emb", "input": ""}, "input", "invalid_value"),
    ("/embeddings", {"model": "emb", "input": ["a", 1]}, "input[1]", "invalid_type"),
    ("/embeddings", {"model": "emb", "input": ["a"] * 2049}, "input", "invalid_value"),
    ("/embeddings", {"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
    ("/embeddings", {"model": "emb", "input": "x", "dimensions": "8"}, "dimensions", "invalid_type"),
    ("/embeddings", {"model": 5, "input": "x"}, "model", "invalid_type"),
    ("/completions", {"model": "m1"}, "prompt", "missing_required_parameter"),
    ("/completions", {"model": "m1", "prompt": {"a": 1}}, "prompt", "invalid_type"),
    ("/completions", {"model": "m1", "prompt": "x", "stream": "yes"}, "stream", "invalid_type"),
    ("/completions", {"model": "m1", "prompt": "x", "max_tokens": "5"}, "max_tokens", "invalid_type"),
    ("/completions", {"model": "m1", "prompt": "x", "temperature": 3}, "temperature", "invalid_value"),
    ("/completions", {"model": "m1", "prompt": "x", "logprobs": 9}, "logprobs", "invalid_value"),
    ("/completions", {"model": "m1", "prompt": "x", "stream_options": []}, "stream_options", "invalid_type"),
    ("/embeddings", b"{not json", None, "invalid_json"),
    ("/completions", b"[1, 2]", None, "invalid_json"),
])
def test_malformed_requests_get_openai_errors(gw, fresh_stub, path, body, param, code):
    r = _post(gw, path, body)
    err = _error(r, 400)
    assert (err["param"], err["code"]) == (param, code), err
    assert fresh_stub.requests == []
    row = gw.row(r.headers["x-request-id"])
    assert row["status"] == 400 and row["surface"] == path[1:]


def test_unknown_model_and_content_type(gw, fresh_stub):
    err = _error(_post(gw, "/embeddings", {"model": "nope", "input": "x"}), 404)
    assert err["code"] == "model_not_found" and "emb" in err["message"]
    r = httpx.post(gw.base_url + "/completions", content=b"prompt=x", timeout=30,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert _error(r, 415)["code"] == "unsupported_media_type"
    assert _error(httpx.get(gw.base_url + "/embeddings", timeout=30), 405)
    assert fresh_stub.requests == []


# -- chat and the embedding models; the model list; stats ----------------------------------------------


def test_chat_never_routes_to_an_embedding_model(gw, fresh_stub):
    raw = gw.client().chat.completions.with_raw_response.create(
        model="tierwise", messages=[{"role": "user", "content": "hi"}])
    row = gw.row(raw.headers["x-request-id"])
    assert "emb" not in row["candidates"] and row["excluded"]["emb"].startswith("lacks chat")
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "unsupported_capability" and "embedding model" in e.value.body["message"]


def test_models_list_the_capabilities(gw):
    by_id = {m.id: m for m in gw.client().models.list().data}
    assert by_id["emb"].capabilities == ["embeddings"]
    assert "completions" in by_id["m1"].capabilities and "completions" not in by_id["chat-only"].capabilities


def test_stats_count_every_surface_and_keep_forwarded_ones_out_of_the_baseline(gw):
    from typer.testing import CliRunner

    from tierwise.cli import app
    from tierwise.decision_log import summarize

    client = gw.client()
    client.embeddings.create(model="emb", input="x")
    client.completions.create(model="m1", prompt="x")
    last = client.chat.completions.with_raw_response.create(model="m1", messages=[{"role": "user", "content": "x"}])
    gw.row(last.headers["x-request-id"])  # the writer is FIFO: every earlier row is in too
    rows = gw.rows()
    res = CliRunner().invoke(app, ["stats", "--json", "--config", str(gw.cfg)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    count = {k: sum(1 for r in rows if r["surface"] == k) for k in ("chat", "embeddings", "completions")}
    assert all(s["surfaces"][k] == n > 0 for k, n in count.items()) and s["requests"] == len(rows)
    ok = [r for r in rows if r["status"] == 200]
    fwd = [r for r in ok if r["surface"] in ("embeddings", "completions")]
    assert s["forwarded_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in fwd))
    chat_only = summarize([r for r in rows if r["surface"] == "chat"],
                          {m.name: (m.input_per_1m, m.output_per_1m) for m in Pyramid.load(gw.cfg).chat_models})
    assert s["baseline_cost_usd"] == pytest.approx(chat_only["baseline_cost_usd"])
    assert s["saved_usd"] == pytest.approx(chat_only["saved_usd"]) and s["baseline_model"] == "chat-only"
    text = " ".join(CliRunner().invoke(app, ["stats", "--config", str(gw.cfg)]).output.split())
    assert "embeddings" in text and "not in the baseline" in text


# -- from Python, and the config rules -------------------------------------------------------------------


def test_engine_from_python(gw, fresh_stub):
    from tierwise.engine import Engine

    async def main():
        engine = Engine.from_pyramid(Pyramid.load(gw.cfg))
        try:
            a = await engine.embed({"model": "tierwise", "input": ["a"]})
            t = await engine.complete_text({"model": "m0", "prompt": "p", "max_tokens": 1})
            s = await engine.complete_text_stream({"model": "m1", "prompt": "p"})
            pieces = [c["choices"][0]["text"] async for c in s if c.get("choices")]
            return a, t, s, pieces, engine.pending
        finally:
            await engine.aclose()

    a, t, s, pieces, pending = asyncio.run(main())
    assert a.body["model"] == "emb" and a.record.surface == "embeddings" and a.record.cost_usd > 0
    assert t.body["choices"][0]["text"] == "echo:" and t.body["choices"][0]["finish_reason"] == "length"
    assert t.record.model == "m1" and t.record.fallbacks[0]["model"] == "m0"
    assert "".join(pieces) == "echo: p" and s.record.status == 200 and s.record.stream and pending == 0


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["models"][0].update(embedding=True), "'embedding' is for backend llama_cpp"),
    (lambda d: d["models"][1].update(capabilities=["embeddings", "tools"]), "`capabilities: [embeddings]` alone"),
    (lambda d: d.update(default_embeddings_model="m0"), "default_embeddings_model: model 'm0' does not serve"),
    (lambda d: d.update(default_completions_model="emb"), "default_completions_model: model 'emb' does not serve"),
    (lambda d: d.update(default_embeddings_model="nope"), "default_embeddings_model: no model 'nope'"),
    (lambda d: d.update(models=[d["models"][1]]), "needs at least one chat model"),
])
def test_config_rules(edit, message):
    data = {"models": [
        {"name": "m0", "backend": "openai", "endpoint": "http://x/v1", "model": "a", "input_per_1m": 1, "output_per_1m": 1},
        {"name": "emb", "backend": "openai", "endpoint": "http://x/v1", "model": "e", "input_per_1m": 0.02,
         "output_per_1m": 0, "capabilities": ["embeddings"]},
    ]}
    Pyramid.from_dict(data)  # an embedding model may cost less than the chat tiers before it
    edit(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Pyramid.from_dict(data)
