"""``/v1/embeddings`` and legacy ``/v1/completions`` on the embedded local pyramid, through ``tierwise serve``.

The pyramid: SmolLM2-135M as a chat model (it serves legacy completions from the raw prompt) and the
same GGUF loaded again with ``embedding: true`` as the embedding model (mean-pooled hidden states: a
real, if weak, embedding). Driven by the real ``openai`` SDK; kept short (CI runs it on 2 cores).
"""

from __future__ import annotations

import numpy as np
import openai
import pytest
from _helpers import embedded_or_skip

from tierwise.testing import Gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    embedded_or_skip("smollm2-135m")
    tmp = tmp_path_factory.mktemp("passthrough-local")
    cfg = tmp / "pyramid.yaml"
    cfg.write_text(f"""models:
  - name: smollm2
    backend: llama_cpp
    embedded: smollm2-135m
    input_per_1m: 0.01
    output_per_1m: 0.02
    context_window: 1024
    n_threads: 2
  - name: smol-embed
    backend: llama_cpp
    embedded: smollm2-135m
    embedding: true
    input_per_1m: 0.005
    output_per_1m: 0
    context_window: 256
    n_threads: 2
default_embeddings_model: smol-embed
default_completions_model: smollm2
log: {tmp / 'log.sqlite'}
""")
    g = Gateway.start(cfg)
    yield g
    g.stop()


def _client(gw):
    return gw.client(timeout=180)


def test_local_embeddings_are_unit_vectors_and_similar_texts_are_closer(gw):
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.",
             "Stock markets fell sharply after the interest rate decision."]
    raw = _client(gw).embeddings.with_raw_response.create(model="tierwise", input=texts)  # SDK default: base64
    r = raw.parse()
    assert r.model == "smol-embed" and len(r.data) == 3 and raw.headers["x-tierwise-model"] == "smol-embed"
    e = np.array([d.embedding for d in r.data])
    assert e.shape == (3, 576) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]
    row = gw.row(raw.headers["x-request-id"])
    assert row["surface"] == "embeddings" and row["tokens_in"] == r.usage.prompt_tokens > 10
    assert row["cost_usd"] == pytest.approx(r.usage.prompt_tokens * 0.005 / 1e6)
    floats = _client(gw).embeddings.create(model="smol-embed", input=texts[0], encoding_format="float", dimensions=64)
    v = np.array(floats.data[0].embedding)
    assert v.shape == (64,) and abs(np.linalg.norm(v) - 1) < 1e-6
    assert np.allclose(v, e[0, :64] / np.linalg.norm(e[0, :64]), atol=1e-5)  # truncated, renormalised


def test_local_embedding_refusals_are_openai_400s(gw):
    c = _client(gw)
    for kwargs, param, code in [
        ({"input": [[1, 2, 3]]}, "input", "unsupported_value"),  # token ids: tokenizer-specific
        ({"input": "word " * 400}, "input", "context_length_exceeded"),  # context_window 256
        ({"input": "x", "dimensions": 4096}, "dimensions", "unsupported_value"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            c.embeddings.create(model="smol-embed", **kwargs)
        assert (e.value.body["param"], e.value.body["code"]) == (param, code), e.value.body
    with pytest.raises(openai.BadRequestError) as e:  # the chat model does not embed
        c.embeddings.create(model="smollm2", input="x")
    assert e.value.body["code"] == "unsupported_capability"


def test_local_legacy_completion(gw):
    c = _client(gw)
    raw = c.completions.with_raw_response.create(model="smollm2", prompt="The capital of France is", max_tokens=5)
    r = raw.parse()
    assert r.object == "text_completion" and r.model == "smollm2" and r.choices[0].text.strip()
    assert r.usage.completion_tokens <= 5 and r.choices[0].finish_reason in ("stop", "length")
    row = gw.row(raw.headers["x-request-id"])
    assert row["surface"] == "completions" and row["tokens_out"] == r.usage.completion_tokens
    assert row["cost_usd"] == pytest.approx((r.usage.prompt_tokens * 0.01 + r.usage.completion_tokens * 0.02) / 1e6)
    default = c.completions.create(model="tierwise", prompt="1, 2, 3,")  # OpenAI's default max_tokens: 16
    assert default.model == "smollm2" and default.usage.completion_tokens <= 16
    echoed = c.completions.create(model="smollm2", prompt="1, 2, 3,", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("1, 2, 3,")
    lp = c.completions.create(model="smollm2", prompt="1, 2, 3,", max_tokens=3, logprobs=2).choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert all(len(t) == 2 for t in lp.top_logprobs) and all(x <= 0 for x in lp.token_logprobs)


def test_local_legacy_completion_stream(gw):
    c = _client(gw)
    whole = c.completions.create(model="smollm2", prompt="def add(a, b):", max_tokens=8)
    chunks = list(c.completions.create(model="smollm2", prompt="def add(a, b):", max_tokens=8, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text  # greedy: the same tokens, streamed
    assert {ch.model for ch in chunks} == {"smollm2"} and chunks[-1].usage.completion_tokens <= 8
    with pytest.raises(openai.BadRequestError) as e:  # several prompts at once: refused, not dropped
        c.completions.create(model="smollm2", prompt=["a", "b"], max_tokens=2)
    assert e.value.body["param"] == "prompt"
