"""LangChain's ``ChatOpenAI`` pointed at the gateway: tool calling and structured output work end to end.

A real ``tierwise serve`` process in front of the stub backend's ``tools`` mode (``tierwise.testing``):
with ``tools`` in the request the stub calls the tool with arguments built from its JSON schema
(strings "Paris", integers 3), with a ``json_schema`` response format it answers an instance of the
schema. So the gateway passes LangChain's requests and the model's answers through unchanged iff
these parse into exactly the values below.
"""

from __future__ import annotations

import functools
import operator

import pytest
from pydantic import BaseModel, Field

lc = pytest.importorskip("langchain_openai")


class GetWeather(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(description="the city, e.g. Paris")
    days: int = Field(description="how many days of forecast")


class Forecast(BaseModel):
    """A structured answer."""

    city: str
    days: int
    temperature_c: float
    sunny: bool


class Trip(BaseModel):
    """Nested models and lists become $defs / arrays in the schema."""

    destination: Forecast
    stops: list[str]


WANT_CALL = {"city": "Paris", "days": 3}
WANT_FORECAST = Forecast(city="Paris", days=3, temperature_c=2.5, sunny=True)


@pytest.fixture(scope="module")
def lc_gw(stub, gateway):
    """Two tool-capable models (the openai backend's default capabilities include tools and json_schema)."""
    return gateway(stub.url, ("tools@lc0", "tools@lc1"), label="langchain")


def _llm(gw, model: str = "m0", **kw):
    return lc.ChatOpenAI(model=model, base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30, **kw)


@pytest.mark.parametrize("model", ["m0", "tierwise"])
def test_bind_tools_invoke_returns_the_tool_call(lc_gw, fresh_stub, model):
    msg = _llm(lc_gw, model).bind_tools([GetWeather]).invoke("What's the weather in Paris for 3 days?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("GetWeather", WANT_CALL)]
    assert msg.tool_calls[0]["id"].startswith("call_")
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    answered = msg.response_metadata["model_name"]
    assert answered == "m0" if model == "m0" else answered in {"m0", "m1"}
    (req,) = fresh_stub.requests
    assert req["body"]["tools"][0]["function"]["name"] == "GetWeather"
    assert req["body"]["model"] == {"m0": "tools@lc0", "m1": "tools@lc1"}[answered]


def test_bind_tools_stream_accumulates_the_tool_call(lc_gw, fresh_stub):
    chunks = list(_llm(lc_gw).bind_tools([GetWeather]).stream("weather in Paris?"))
    assert len(chunks) > 2  # the call arrived in fragments
    msg = functools.reduce(operator.add, chunks)
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("GetWeather", WANT_CALL)]
    assert fresh_stub.requests[0]["body"]["stream"] is True


def test_tool_call_round_trip(lc_gw, fresh_stub):
    """The follow-up turn (assistant tool_calls + tool result) goes back through the gateway intact."""
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = _llm(lc_gw).bind_tools([GetWeather])
    question = HumanMessage("weather in Paris?")
    ai = llm.invoke([question])
    result = ToolMessage(content='{"temp_c": 21}', tool_call_id=ai.tool_calls[0]["id"])
    fresh_stub.reset()
    llm.invoke([question, ai, result])
    msgs = fresh_stub.requests[0]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
    assert msgs[1]["tool_calls"][0]["id"] == ai.tool_calls[0]["id"]
    assert msgs[1]["tool_calls"][0]["function"]["name"] == "GetWeather"
    assert msgs[2] == {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": ai.tool_calls[0]["id"]}


@pytest.mark.parametrize("method", [None, "json_schema", "function_calling"], ids=["default", "json_schema",
                                                                                 "function_calling"])
def test_with_structured_output_parses(lc_gw, fresh_stub, method):
    kw = {} if method is None else {"method": method}
    out = _llm(lc_gw).with_structured_output(Forecast, **kw).invoke("Forecast for Paris, 3 days")
    assert out == WANT_FORECAST
    (req,) = fresh_stub.requests
    body = req["body"]
    if method == "function_calling":
        assert body["tools"][0]["function"]["name"] == "Forecast"
        assert body["tool_choice"] == {"type": "function", "function": {"name": "Forecast"}}
    elif method == "json_schema":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["name"] == "Forecast"
    else:  # whichever LangChain's default is, the gateway must pass it through
        assert "response_format" in body or "tools" in body


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_nested_model(lc_gw, fresh_stub, method):
    out = _llm(lc_gw).with_structured_output(Trip, method=method).invoke("plan a trip")
    assert out == Trip(destination=WANT_FORECAST, stops=["Paris"])


def test_with_structured_output_routed(lc_gw, fresh_stub):
    out = _llm(lc_gw, "tierwise").with_structured_output(Forecast, method="json_schema", include_raw=True).invoke(
        "Forecast for Paris")
    assert out["parsed"] == WANT_FORECAST and out["parsing_error"] is None
    assert out["raw"].response_metadata["model_name"] in {"m0", "m1"}


async def _ainvoke(gw):
    return await _llm(gw).bind_tools([GetWeather]).ainvoke("weather in Paris?")


def test_async_bind_tools(lc_gw, fresh_stub):
    import asyncio

    msg = asyncio.run(_ainvoke(lc_gw))
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("GetWeather", WANT_CALL)]
