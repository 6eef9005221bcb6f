"""Pyramid YAML: every bad field fails with one line naming the file and the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tierwise.config import ConfigError, Pyramid, default_pyramid
from tierwise.prices import default_price_book
from tierwise.weights import EMBEDDED

REPO = Path(__file__).resolve().parents[1]


def _good(tmp_path: Path) -> dict:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    return {
        "models": [
            {"name": "small", "backend": "llama_cpp", "path": "tiny.gguf", "input_per_1m": 0.01, "output_per_1m": 0.02},
            {
                "name": "big",
                "backend": "openai",
                "endpoint": "http://127.0.0.1:9/v1",
                "model": "gpt-x",
                "api_key_env": "TIERWISE_TEST_KEY",
                "input_per_1m": 1.0,
                "output_per_1m": 2.0,
                "context_window": 8192,
            },
        ],
        "knob": 0.5,
    }


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "pyramid.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_valid_pyramid_resolves_paths_and_defaults(tmp_path):
    data = _good(tmp_path)
    data["router"] = "routers/r.json"
    p = Pyramid.load(_write(tmp_path, data))
    assert p.names == ["small", "big"]
    assert p.router == str((tmp_path / "routers" / "r.json").resolve())
    small, big = p.models
    assert small.path == (tmp_path / "tiny.gguf").resolve()
    assert small.max_concurrency == 1 and small.n_threads == os.cpu_count()
    assert big.max_concurrency > 1 and big.context_window == 8192
    assert p.rule == "cost_weight" and p.knob == 0.5
    assert p.log_target().endswith("decisions.sqlite") and "~" not in p.log_target()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["models"][1].__setitem__("context_window", 0), "models[1].context_window: must be > 0"),
        (lambda d: d["models"][0].__setitem__("input_per_1m", -1), "models[0].input_per_1m: must be >= 0"),
        (lambda d: d["models"][0].__setitem__("max_concurrency", 0), "models[0].max_concurrency: must be > 0"),
        (lambda d: d["models"][1].__setitem__("timeout_s", -2), "models[1].timeout_s: must be > 0"),
        (lambda d: d["models"][0].__setitem__("n_threads", 0), "models[0].n_threads: must be > 0"),
        (lambda d: d["models"][0].__setitem__("contxt_window", 10), "models[0].contxt_window: unknown key"),
        (lambda d: d.__setitem__("routr", "x"), "routr: unknown key"),
        (lambda d: d["models"][0].pop("output_per_1m"), "models[0].output_per_1m: required"),
        (lambda d: d["models"][0].__setitem__("backend", "vllm"), "models[0].backend: must be one of"),
        (lambda d: d["models"][0].__setitem__("embedded", "gpt-5"), "unknown embedded model 'gpt-5'"),
        (lambda d: d["models"][1].__setitem__("endpoint", "127.0.0.1:8000"), "models[1].endpoint: must start with"),
        (lambda d: d["models"][1].pop("model"), "models[1]: an openai model needs 'endpoint'"),
        (lambda d: d["models"][0].pop("path"), "models[0]: a llama_cpp model needs exactly one of 'path'"),
        (lambda d: d["models"][1].__setitem__("name", "small"), "models[1].name: duplicate model name 'small'"),
        (lambda d: d["models"][1].__setitem__("input_per_1m", 0.0) or d["models"][1].__setitem__("output_per_1m", 0.0),
         "list models cheapest first"),
        (lambda d: d.__setitem__("rule", "threshold") or d.__setitem__("knob", 3.0), "knob: the threshold rule"),
        (lambda d: d.__setitem__("models", []), "models: needs at least one model"),
        (lambda d: d.__setitem__("max_body_bytes", 0), "max_body_bytes: must be > 0"),
        (lambda d: d["models"][0].__setitem__("path", "missing.gguf"), "models[0].path: file not found"),
    ],
)
def test_bad_field_is_named(tmp_path, mutate, expected):
    data = _good(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        Pyramid.load(_write(tmp_path, data))
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "pyramid.yaml") + ": "), msg
    assert expected in msg, msg
    assert "\n" not in msg


def test_not_yaml_and_not_mapping(tmp_path):
    p = tmp_path / "pyramid.yaml"
    p.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Pyramid.load(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Pyramid.load(p)
    with pytest.raises(ConfigError, match="pyramid file not found"):
        Pyramid.load(tmp_path / "nope.yaml")


def test_api_key_env_read_at_start(tmp_path, monkeypatch):
    p = Pyramid.load(_write(tmp_path, _good(tmp_path)))
    monkeypatch.delenv("TIERWISE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="api_key_env: environment variable TIERWISE_TEST_KEY is not set"):
        p.model("big").api_key()
    monkeypatch.setenv("TIERWISE_TEST_KEY", "sk-test")
    assert p.model("big").api_key() == "sk-test"
    assert p.model("small").api_key() is None


def test_client_keys(tmp_path, monkeypatch):
    data = _good(tmp_path)
    data["api_keys_env"] = "TIERWISE_TEST_CLIENT_KEYS"
    p = Pyramid.load(_write(tmp_path, data))
    monkeypatch.setenv("TIERWISE_TEST_CLIENT_KEYS", "a, b,")
    assert p.client_keys() == ["a", "b"]
    monkeypatch.delenv("TIERWISE_TEST_CLIENT_KEYS")
    with pytest.raises(ConfigError, match="TIERWISE_TEST_CLIENT_KEYS is not set"):
        p.client_keys()
    data["api_keys"] = ["k"]
    with pytest.raises(ConfigError, match="not both"):
        Pyramid.load(_write(tmp_path, data))


def test_default_pyramid_is_the_embedded_models_priced_from_the_book():
    p = default_pyramid()
    assert p.names == list(EMBEDDED)
    book = default_price_book()
    for m in p.models:
        price, _ = book.lookup(m.name)
        assert (m.input_per_1m, m.output_per_1m) == (price.input_per_1m, price.output_per_1m)
        assert m.backend == "llama_cpp" and m.embedded == m.name and m.path is None
    costs = [m.blended_per_1m for m in p.models]
    assert costs == sorted(costs) and costs[0] < costs[-1]


def test_example_pyramid_loads(tmp_path, monkeypatch):
    """The documented example must stay valid (its GGUF paths are made to exist here)."""
    example = REPO / "examples" / "pyramid.yaml"
    data = yaml.safe_load(example.read_text())
    for m in data["models"]:
        if m.get("path"):
            target = tmp_path / m["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"GGUF")
    copy = tmp_path / "pyramid.yaml"
    copy.write_text(example.read_text())
    p = Pyramid.load(copy)
    assert {m.backend for m in p.models} == {"llama_cpp", "openai"}
    assert any(m.embedded for m in p.models)


def test_knob_may_be_a_target_string(tmp_path):
    from tierwise.config import Pyramid

    base = {"models": [{"name": "a", "backend": "openai", "endpoint": "http://x/v1", "model": "a",
                        "input_per_1m": 0.1, "output_per_1m": 0.2}]}
    assert Pyramid.from_dict({**base, "knob": "quality=0.9"}).knob == "quality=0.9"
    assert Pyramid.from_dict({**base, "knob": "0.25"}).knob == 0.25
    with pytest.raises(Exception, match="neither a number nor a target"):
        Pyramid.from_dict({**base, "knob": "fast"})


@pytest.mark.parametrize(
    "key, value, mutate",
    [
        ("knob", "nan", lambda d, v: d.__setitem__("knob", v)),
        ("knob", "inf", lambda d, v: d.__setitem__("knob", v)),  # quoted: read as text, then as a number
        ("knob", float("nan"), lambda d, v: d.__setitem__("knob", v)),
        ("models[1].output_per_1m", float("inf"), lambda d, v: d["models"][1].__setitem__("output_per_1m", v)),
        ("models[0].input_per_1m", float("inf"), lambda d, v: d["models"][0].__setitem__("input_per_1m", v)),
        ("models[0].input_per_1m", float("nan"), lambda d, v: d["models"][0].__setitem__("input_per_1m", v)),
        ("models[1].timeout_s", float("inf"), lambda d, v: d["models"][1].__setitem__("timeout_s", v)),
        ("body_timeout_s", float("nan"), lambda d, v: d.__setitem__("body_timeout_s", v)),
        ("keys[0].usd_per_day", float("inf"),
         lambda d, v: d.__setitem__("keys", [{"name": "team", "key": "sk-team-123", "usd_per_day": v}])),
    ],
)
def test_nan_and_infinity_are_rejected_naming_the_key(tmp_path, key, value, mutate):
    """YAML's .nan / .inf pass `ge=0` (and NaN slips through every ordering check): each float must be finite."""
    data = _good(tmp_path)
    mutate(data, value)
    with pytest.raises(ConfigError) as info:
        Pyramid.load(_write(tmp_path, data))
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "pyramid.yaml") + ": "), msg
    assert f"{key}: must be a finite number" in msg, msg
    assert "cheapest first" not in msg and "\n" not in msg


def test_a_boolean_is_not_a_price(tmp_path):
    """Pydantic's lax mode read `input_per_1m: true` as 1.0."""
    data = _good(tmp_path)
    data["models"][0]["input_per_1m"] = True
    with pytest.raises(ConfigError, match=r"models\[0\].input_per_1m: Input should be a valid number"):
        Pyramid.load(_write(tmp_path, data))
    data["models"][0]["input_per_1m"] = 1  # a whole number still is one
    assert Pyramid.load(_write(tmp_path, data)).models[0].input_per_1m == 1.0
