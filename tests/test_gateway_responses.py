"""``POST /v1/responses``: the OpenAI Responses API, routed like chat completions.

Two layers:

* the pure translator (``tierwise.gateway.surfaces.responses``): Responses request -> chat body,
  ``chat.completion`` -> Response object, chat chunks -> Responses events; every Response and event
  is validated against the installed ``openai`` SDK's own pydantic types (required fields included);
* real ``tierwise serve`` processes over the recording stub backend, driven by the real ``openai``
  SDK (``responses.create`` streamed and not, ``responses.stream``, ``responses.parse``,
  ``responses.retrieve`` / ``delete``), and raw httpx where the wire format matters: function-tool
  round trips, ``previous_response_id`` follow-ups (the stub receives the earlier turns), errors in
  OpenAI's shape with the right 4xx, upstream rejections as-is, fallbacks, client keys, the
  decision log (``surface`` = ``responses``, row id = response id) and ``tierwise stats``.

A slow test runs the same SDK calls against a local pyramid (Qwen2.5-Coder-0.5B on llama.cpp).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from tierwise.decision_log import DecisionLog
from tierwise.errors import RequestError
from tierwise.gateway.surfaces.responses.answer import (
    completion_to_response,
    new_response_id,
)
from tierwise.gateway.surfaces.responses.items import items_to_messages
from tierwise.gateway.surfaces.responses.request import chat_body, parse_request
from tierwise.gateway.surfaces.responses.routes import sse_event
from tierwise.gateway.surfaces.responses.stream import StreamTranslator
from tierwise.testing import Gateway, StubBackend, tool_call_arguments

ALL_CAPS = ["tools", "json_object", "json_schema", "vision", "logprobs", "n"]
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city", "days"], "additionalProperties": False},
           "strict": True}
WEATHER_CHAT = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
       "AAAABJRU5ErkJggg==")
EVENTS = TypeAdapter(ResponseStreamEvent)
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.completed"]


def _ids():
    n = iter(range(1000))
    return lambda prefix: f"{prefix}_{next(n)}"


def _err(exc_info) -> RequestError:
    assert isinstance(exc_info.value, RequestError)
    return exc_info.value


def _assert_error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in r.text
    return err


def _sse_events(text: str) -> list[dict]:
    """The events of a Responses SSE body: ``event: <type>`` + ``data: <json>``, no ``[DONE]``."""
    out = []
    for block in [b for b in text.split("\n\n") if b.strip()]:
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        ev = json.loads(lines[1][len("data: "):])
        assert ev["type"] == lines[0][len("event: "):]
        out.append(ev)
    return out


def _chat_requests(stub: StubBackend) -> list[dict]:
    reqs = stub.requests
    assert all(r["path"] == "/v1/chat/completions" for r in reqs), [r["path"] for r in reqs]
    return reqs


# == the translator: request ===========================================================================


def test_string_input_and_instructions_become_system_then_user():
    call = parse_request(b'{"model": "tierwise", "input": "2+2?", "instructions": "Be terse."}')
    assert call.model == "tierwise" and call.store is True and call.stream is False
    assert chat_body(call) == {"model": "tierwise", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]}


def test_item_list_translation():
    items = [
        {"role": "developer", "content": "Use metric units."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this? "},
            {"type": "input_image", "image_url": PNG, "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # no chat equivalent: dropped
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "21C"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Warmer?"}]},
    ]
    msgs = items_to_messages(items)
    assert msgs == [
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "text", "text": "What is this? "},
                                     {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]},
        # the assistant's text and both consecutive function calls: one assistant message
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C"},
        {"role": "user", "content": "Warmer?"},
    ]
    # a lone function_call (no assistant text before it) is its own assistant message
    assert items_to_messages([{"role": "user", "content": "hi"},
                              {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])[1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_request_fields_map_to_chat_and_the_rest_stays_out():
    call = parse_request({
        "model": "tierwise:0.5", "input": "weather?", "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                                           "name": "get_weather"},
        "parallel_tool_calls": False, "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "user": "u-1",
        "metadata": {"trace": "t1"}, "reasoning": {"effort": "low"}, "store": False, "truncation": "auto",
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": True,
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                 "verbosity": "low"},
        "include": ["message.output_text.logprobs"], "top_logprobs": 2, "stream": True,
        "prompt_cache_key": "k", "service_tier": "auto", "safety_identifier": "s"})
    assert call.store is False and call.stream is True
    assert chat_body(call) == {
        "model": "tierwise:0.5", "messages": [{"role": "user", "content": "weather?"}],
        "temperature": 0.2, "top_p": 0.9, "user": "u-1", "max_tokens": 64,
        "tools": [WEATHER_CHAT], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": True}},
        "logprobs": True, "top_logprobs": 2,
        "stream": True, "stream_options": {"include_usage": True}}
    # echoed on the Response object, not sent upstream
    assert call.echo["metadata"] == {"trace": "t1"} and call.echo["reasoning"] == {"effort": "low"}
    assert call.echo["text"]["verbosity"] == "low" and call.echo["truncation"] == "auto"
    # json_object; tool_choice / parallel_tool_calls without tools are not sent (chat refuses them)
    call = parse_request({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}},
                          "tool_choice": "none", "parallel_tool_calls": True})
    assert chat_body(call) == {"model": "m", "messages": [{"role": "user", "content": "x"}],
                               "response_format": {"type": "json_object"}}


def test_history_goes_between_instructions_and_this_turn():
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"}]
    call = parse_request({"model": "m", "input": "two", "instructions": "new rules",
                          "previous_response_id": "resp_x"})
    assert chat_body(call, history)["messages"] == [
        {"role": "system", "content": "new rules"}, *history, {"role": "user", "content": "two"}]
    assert call.turn == [{"role": "user", "content": "two"}]  # what gets stored for this turn


@pytest.mark.parametrize("tool_type", ["web_search", "web_search_preview", "file_search", "computer_use_preview",
                                       "code_interpreter", "mcp", "image_generation"])
def test_builtin_tools_are_a_400_naming_the_type(tool_type):
    with pytest.raises(RequestError) as ei:
        parse_request({"model": "m", "input": "x", "tools": [WEATHER, {"type": tool_type}]})
    e = _err(ei)
    assert e.status == 400 and e.type == "invalid_request_error" and e.param == "tools[1].type"
    assert f"'{tool_type}'" in e.message and "not supported" in e.message and e.code == "unsupported_tool"


@pytest.mark.parametrize("raw, param, code", [
    (b'{"model": "m"}', "input", "missing_required_parameter"),
    (b'{"input": "x"}', "model", "missing_required_parameter"),
    (b'{"model": "m", "input": 5}', "input", "invalid_type"),
    (b'not json', None, "invalid_json"),
    (b'[1, 2]', None, "invalid_json"),
    (b'{"model": "m", "input": [{"type": "bogus_item"}]}', "input[0].type", "unsupported_value"),
    (b'{"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}', "input[0].type", "unsupported_value"),
    (b'{"model": "m", "input": [{"content": "no role"}]}', "input[0].type", "missing_required_parameter"),
    (b'{"model": "m", "input": [{"role": "robot", "content": "x"}]}', "input[0].role", "invalid_value"),
    (b'{"model": "m", "input": [{"role": "user"}]}', "input[0].content", "missing_required_parameter"),
    (b'{"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}', "input[0].call_id",
     "missing_required_parameter"),
    (b'{"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}', "input[0].output",
     "missing_required_parameter"),
    (b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}',
     "input[0].content[0].file_id", "unsupported_value"),
    (b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}',
     "input[0].content[0].type", "unsupported_value"),
    (b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}',
     "input[0].content[0].text", "missing_required_parameter"),
    (b'{"model": "m", "input": "x", "tools": [{"type": "function"}]}', "tools[0].name", "missing_required_parameter"),
    (b'{"model": "m", "input": "x", "tool_choice": "sometimes"}', "tool_choice", "invalid_value"),
    (b'{"model": "m", "input": "x", "temperature": 3}', "temperature", "invalid_value"),
    (b'{"model": "m", "input": "x", "max_output_tokens": 0}', "max_output_tokens", "invalid_value"),
    (b'{"model": "m", "input": "x", "stream": "yes"}', "stream", "invalid_type"),
    (b'{"model": "m", "input": "x", "metadata": {"a": 1}}', "metadata.a", "invalid_type"),
    (b'{"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}',
     "text.format.schema", "missing_required_parameter"),
    (b'{"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}', "text.format.type", "invalid_value"),
    (b'{"model": "m", "input": "x", "background": true}', "background", "unsupported_parameter"),
    (b'{"model": "m", "input": "x", "conversation": "conv_1"}', "conversation", "unsupported_parameter"),
])
def test_malformed_requests_are_400s_naming_the_field(raw, param, code):
    with pytest.raises(RequestError) as ei:
        call = parse_request(raw)
        chat_body(call)
    e = _err(ei)
    assert (e.status, e.param, e.code) == (400, param, code), e.message
    assert e.type == "invalid_request_error" and e.message


def test_a_function_call_output_without_its_call_is_a_400():
    """As OpenAI answers it; passed on, the chat template rendered a tool turn nobody asked for."""
    out = {"type": "function_call_output", "call_id": "call_9", "output": "sunny"}
    with pytest.raises(RequestError) as ei:
        chat_body(parse_request({"model": "m", "input": [{"role": "user", "content": "weather?"}, out]}))
    assert _err(ei).param == "input" and "call_9" in _err(ei).message
    made = {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{}"}
    history = items_to_messages([{"role": "user", "content": "weather?"}, made])
    assert chat_body(parse_request({"model": "m", "input": [out]}), history)["messages"][-1]["role"] == "tool"


def test_empty_input_without_history_is_a_400():
    with pytest.raises(RequestError) as ei:
        chat_body(parse_request({"model": "m", "input": [], "instructions": "only a system prompt"}))
    assert _err(ei).param == "input"


# == the translator: answers ===========================================================================


def _completion(message: dict, finish: str = "stop", usage: dict | None = None, logprobs=None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m1",
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
            "usage": usage if usage is not None else {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                                                       "prompt_tokens_details": {"cached_tokens": 2},
                                                       "completion_tokens_details": {"reasoning_tokens": 1}}}


def test_text_completion_as_response_object():
    call = parse_request({"model": "tierwise", "input": "hi", "instructions": "Be nice.", "metadata": {"k": "v"},
                          "temperature": 0.5})
    resp = completion_to_response(call, _completion({"role": "assistant", "content": "hello"}),
                                  response_id="resp_1", created_at=1700000000, ids=_ids())
    sdk = SDKResponse.model_validate(resp)  # every field the SDK requires is there
    assert sdk.output_text == "hello" and sdk.model == "m1" and sdk.status == "completed"
    assert resp["output"] == [{"type": "message", "id": "msg_0", "status": "completed", "role": "assistant",
                               "content": [{"type": "output_text", "text": "hello", "annotations": [],
                                            "logprobs": []}]}]
    assert resp["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
                             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 10}
    assert (resp["id"], resp["object"], resp["created_at"]) == ("resp_1", "response", 1700000000)
    assert resp["instructions"] == "Be nice." and resp["metadata"] == {"k": "v"} and resp["temperature"] == 0.5
    assert resp["tools"] == [] and resp["tool_choice"] == "auto" and resp["text"] == {"format": {"type": "text"}}
    assert resp["error"] is None and resp["incomplete_details"] is None and resp["store"] is True


def test_tool_call_completion_as_function_call_items():
    call = parse_request({"model": "m", "input": "weather?", "tools": [WEATHER]})
    msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}
    resp = completion_to_response(call, _completion(msg, "tool_calls"), response_id="resp_2", ids=_ids())
    SDKResponse.model_validate(resp)
    assert resp["output"] == [
        {"type": "function_call", "id": "fc_0", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_2", "name": "get_weather",
         "arguments": '{"city":"Rome"}', "status": "completed"}]
    assert resp["tools"] == [{"type": "function", "name": "get_weather", "description": WEATHER["description"],
                              "parameters": WEATHER["parameters"], "strict": True}]
    # the output, fed back as input, is the same assistant message again (what gets stored)
    assert items_to_messages(resp["output"], prefix="output") == [msg]


def test_length_is_incomplete_and_refusal_and_logprobs_are_kept():
    call = parse_request({"model": "m", "input": "long", "max_output_tokens": 5,
                          "include": ["message.output_text.logprobs"]})
    lp = {"content": [{"token": "a", "logprob": -0.5, "bytes": [97],
                       "top_logprobs": [{"token": "a", "logprob": -0.5, "bytes": [97]}]}]}
    resp = completion_to_response(call, _completion({"role": "assistant", "content": "a"}, "length", logprobs=lp),
                                  response_id="resp_3")
    SDKResponse.model_validate(resp)
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["status"] == "incomplete" and resp["max_output_tokens"] == 5
    assert resp["output"][0]["content"][0]["logprobs"] == [
        {"token": "a", "bytes": [97], "logprob": -0.5, "top_logprobs": [{"token": "a", "bytes": [97], "logprob": -0.5}]}]
    # not asked for (e.g. the cascade asked the backend for them): not returned
    unasked = parse_request({"model": "m", "input": "long"})
    resp = completion_to_response(unasked, _completion({"role": "assistant", "content": "a"}, logprobs=lp),
                                  response_id="resp_3b")
    assert resp["output"][0]["content"][0]["logprobs"] == []
    resp = completion_to_response(call, _completion({"role": "assistant", "content": None, "refusal": "No."}),
                                  response_id="resp_4")
    SDKResponse.model_validate(resp)
    assert resp["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    # no usage from the backend: the engine's counts
    resp = completion_to_response(call, {**_completion({"role": "assistant", "content": "x"}), "usage": None},
                                  response_id="resp_5", usage_fallback=(11, 4))
    assert (resp["usage"]["input_tokens"], resp["usage"]["output_tokens"], resp["usage"]["total_tokens"]) == (11, 4, 15)


# == the translator: streams ===========================================================================


def _chunks(*deltas, finish="stop", usage=None) -> list[dict]:
    out = [{"object": "chat.completion.chunk", "model": "m1",
            "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out.append({"object": "chat.completion.chunk", "model": "m1",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        out.append({"object": "chat.completion.chunk", "model": "m1", "choices": [], "usage": usage})
    return out


def _run(translator: StreamTranslator, chunks: list[dict], fallback=None) -> list[dict]:
    evs = translator.start()
    for c in chunks:
        evs += translator.feed(c)
    evs += translator.finish(fallback)
    for e in evs:
        EVENTS.validate_python(e)  # the SDK's own event types, required fields included
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    return evs


def test_text_stream_events():
    call = parse_request({"model": "m", "input": "hi", "stream": True})
    tr = StreamTranslator(call, response_id="resp_s", model="m1", ids=_ids())
    evs = _run(tr, _chunks({"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"},
                           usage={"prompt_tokens": 5, "completion_tokens": 2}))
    assert [e["type"] for e in evs] == TEXT_EVENTS + ["response.output_text.delta"] * 2 + TEXT_END
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    added = evs[2]
    assert added["item"] == {"type": "message", "id": "msg_0", "status": "in_progress", "role": "assistant",
                             "content": []}
    deltas = [e for e in evs if e["type"] == "response.output_text.delta"]
    assert [(d["item_id"], d["output_index"], d["content_index"], d["delta"]) for d in deltas] == [
        ("msg_0", 0, 0, "Hel"), ("msg_0", 0, 0, "lo")]
    assert evs[-4]["text"] == "Hello"
    final = evs[-1]["response"]
    assert SDKResponse.model_validate(final).output_text == "Hello" and final["status"] == "completed"
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["total_tokens"] == 7
    assert tr.response == final


def test_tool_call_stream_events_after_text():
    call = parse_request({"model": "m", "input": "weather?", "tools": [WEATHER], "stream": True})
    tr = StreamTranslator(call, response_id="resp_t", model="m0", ids=_ids())
    evs = _run(tr, _chunks(
        {"role": "assistant", "content": "Checking."},
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                                      "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_weather",
                                                                                      "arguments": "{}"}}]},
        finish="tool_calls"), fallback=(9, 3))
    types = [e["type"] for e in evs]
    assert types == TEXT_EVENTS + ["response.output_text.delta", "response.output_text.done",
                                   "response.content_part.done", "response.output_item.done",
                                   "response.output_item.added", "response.function_call_arguments.delta",
                                   "response.function_call_arguments.delta", "response.output_item.added",
                                   "response.function_call_arguments.delta",
                                   "response.function_call_arguments.done", "response.output_item.done",
                                   "response.function_call_arguments.done", "response.output_item.done",
                                   "response.completed"]
    final = evs[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][1] == {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                                  "arguments": '{"city":"Paris"}', "status": "completed"}
    assert final["usage"]["input_tokens"] == 9  # no usage chunk: the engine's counts
    done = [e for e in evs if e["type"] == "response.function_call_arguments.done"]
    assert [(d["output_index"], d["name"], d["arguments"]) for d in done] == [
        (1, "get_weather", '{"city":"Paris"}'), (2, "get_weather", "{}")]


def test_empty_and_truncated_streams():
    call = parse_request({"model": "m", "input": "hi", "stream": True})
    evs = _run(StreamTranslator(call, response_id="resp_e", model="m"), _chunks())
    assert evs[-1]["response"]["output"][0]["content"][0]["text"] == ""  # still one (empty) message
    evs = _run(StreamTranslator(call, response_id="resp_l", model="m"), _chunks({"content": "abc"}, finish="length"))
    assert evs[-1]["type"] == "response.incomplete"
    assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_failed_stream_ends_with_response_failed_and_error():
    call = parse_request({"model": "m", "input": "hi", "stream": True})
    tr = StreamTranslator(call, response_id="resp_f", model="m")
    evs = tr.start() + tr.feed(_chunks({"content": "par"})[0])
    evs += tr.fail({"message": "m: timed out", "type": "server_error", "code": "backend_error"})
    for e in evs:
        EVENTS.validate_python(e)
    assert [e["type"] for e in evs][-2:] == ["response.failed", "error"]
    failed = evs[-2]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "m: timed out"}
    assert failed["output"][0]["status"] == "incomplete"
    assert evs[-1]["message"] == "m: timed out" and evs[-1]["error"]["code"] == "backend_error"
    assert sse_event(evs[-1]).startswith(b"event: error\ndata: {")


def test_response_ids():
    rid = new_response_id()
    assert rid.startswith("resp_") and len(rid) == 37 and int(rid[5:], 16) >= 0 and rid != new_response_id()


# == the decision log's stored responses ==================================================================


def test_stored_responses_visible_at_once_expire_and_delete(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", interval_s=0.5)
    try:
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "echo: hi"}]
        log.store_response("resp_a", msgs, {"id": "resp_a", "object": "response"}, key_hash="k1")
        got = log.get_response("resp_a")  # still queued (the writer waits 0.5 s): served from memory
        assert got is not None and got["messages"] == msgs and got["key_hash"] == "k1"
        log.flush()
        assert log._pending_responses == {}  # committed: read from the database from now on
        got = log.get_response("resp_a")
        assert got["messages"] == msgs and got["response"] == {"id": "resp_a", "object": "response"}
        # expiry: never returned past the TTL, deleted by a prune
        log.store_response("resp_old", msgs, {"id": "resp_old"}, ts=time.time() - 31 * 86400)
        assert log.get_response("resp_old") is None
        log.prune_responses()
        log.flush()
        assert [r[0] for r in log._query("SELECT id FROM responses ORDER BY id")] == ["resp_a"]
        log.responses_ttl_days = 1e-9
        assert log.get_response("resp_a") is None
        log.responses_ttl_days = 30
        assert log.delete_response("resp_a").result(5) is True
        assert log.delete_response("resp_a").result(5) is False and log.get_response("resp_a") is None
        assert log.get_response("resp_missing") is None
    finally:
        log.close()


# == end to end: gateways over the recording stub ==========================================================


@pytest.fixture(scope="module")
def resp_gw(stub, gateway):
    """m0 calls tools (and answers JSON schemas), m1 answers with every rich field, m2 echoes."""
    return gateway(stub.url, ("tools@rs0", "rich@rs1", "echo@rs2"), capabilities=[ALL_CAPS] * 3,
                   context_window=1_000_000, label="responses")


@pytest.fixture(scope="module")
def text_gw(stub, gateway):
    """Default openai-backend capabilities: no vision."""
    return gateway(stub.url, ("echo@rtx0", "echo@rtx1"), label="resp-textonly")


@pytest.fixture(scope="module")
def reject_gw(stub, gateway):
    return gateway(stub.url, ("reject-400@rrj0", "echo@rrj1"), label="resp-reject")


@pytest.fixture(scope="module")
def fault_gw(stub, gateway):
    """m0 answers 500 (falls back to m1); m2 streams one chunk then stalls (1 s timeout)."""
    return gateway(stub.url, ("fail@rft0", "echo@rft1", "stall-after-first@rft2"), timeout_s=1.0,
                   label="resp-fault")


KEYS = ("key-alice", "key-bob", "key-admin")


@pytest.fixture(scope="module")
def keys_gw(stub, gateway):
    return gateway(stub.url, ("echo@rk0", "echo@rk1"), extra=f"api_keys: [{KEYS[0]}, {KEYS[1]}]\n"
                   f"admin_keys: [{KEYS[2]}]\n", label="resp-keys")


def test_create_text(resp_gw, fresh_stub):
    client = resp_gw.client()
    raw = client.responses.with_raw_response.create(model="m2", input="hello there")
    resp = raw.parse()
    assert resp.output_text == "echo: hello there" and resp.model == "m2" and resp.status == "completed"
    assert resp.id.startswith("resp_") and len(resp.id) == 37
    assert raw.headers["x-request-id"] == resp.id and raw.headers["x-tierwise-model"] == "m2"
    assert raw.headers["x-tierwise-router"] == "direct" and float(raw.headers["x-tierwise-cost-usd"]) > 0
    (req,) = _chat_requests(fresh_stub)
    assert req["body"] == {"model": "echo@rs2", "messages": [{"role": "user", "content": "hello there"}]}
    stub_usage = req["response"]["body"]["usage"]
    assert resp.usage.input_tokens == stub_usage["prompt_tokens"]
    assert resp.usage.output_tokens == stub_usage["completion_tokens"]


def test_routed_model_names_work(resp_gw, fresh_stub):
    client = resp_gw.client()
    for model in ("tierwise", "tierwise:0.5"):
        raw = client.responses.with_raw_response.create(model=model, input="2+2?")
        resp = raw.parse()
        assert resp.model in ("m0", "m1", "m2") and raw.headers["x-tierwise-model"] == resp.model
        assert raw.headers["x-tierwise-router"] != "direct" and "x-tierwise-score" in raw.headers


def test_instructions_and_parameters(resp_gw, fresh_stub):
    client = resp_gw.client()
    resp = client.responses.create(model="m2", input="hi", instructions="Be terse.", max_output_tokens=50,
                                   temperature=0.3, top_p=0.8, metadata={"trace": "t-9"}, user="u-1",
                                   reasoning={"effort": "low"})
    (req,) = _chat_requests(fresh_stub)
    assert req["body"] == {"model": "echo@rs2", "messages": [{"role": "system", "content": "Be terse."},
                                                              {"role": "user", "content": "hi"}],
                           "max_tokens": 50, "temperature": 0.3, "top_p": 0.8, "user": "u-1"}
    assert resp.instructions == "Be terse." and resp.metadata == {"trace": "t-9"} and resp.max_output_tokens == 50
    assert resp.temperature == 0.3 and resp.reasoning.effort == "low"


def test_rich_answer_usage_details_and_logprobs(resp_gw, fresh_stub):
    client = resp_gw.client()
    resp = client.responses.create(model="m1", input="tell me")
    assert resp.output_text == "echo: tell me"
    assert resp.usage.input_tokens_details.cached_tokens == 1 and resp.usage.output_tokens_details.reasoning_tokens == 2
    assert resp.output[0].content[0].logprobs == []  # the rich stub always sends them; nobody asked
    resp = client.responses.create(model="m1", input="tell me", include=["message.output_text.logprobs"],
                                   top_logprobs=2)
    lps = resp.output[0].content[0].logprobs
    assert [lp.token for lp in lps] == ["echo:", " tell", " me"] and len(lps[0].top_logprobs) == 2
    body = _chat_requests(fresh_stub)[-1]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    events = list(client.responses.create(model="m1", input="tell me", top_logprobs=1, stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert [d.logprobs[0].token for d in deltas] == ["echo:", " tell", " me"]


def test_stream_event_types_in_order(resp_gw, fresh_stub):
    client = resp_gw.client()
    events = list(client.responses.create(model="m2", input="stream me please", stream=True))
    types = [e.type for e in events]
    n = len("echo: stream me please".split(" "))
    assert types == TEXT_EVENTS + ["response.output_text.delta"] * n + TEXT_END
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text == "echo: stream me please" and final.model == "m2"
    assert events[0].response.id == final.id and final.id.startswith("resp_")
    (req,) = _chat_requests(fresh_stub)
    assert req["body"]["stream"] is True and req["body"]["stream_options"] == {"include_usage": True}
    assert final.usage.input_tokens == req["response"]["chunks"][-1]["usage"]["prompt_tokens"]


def test_stream_helper_and_wire_format(resp_gw, fresh_stub):
    client = resp_gw.client()
    deltas = []
    with client.responses.stream(model="m2", input="helper") as stream:
        for ev in stream:
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: helper"
    # the wire: event lines, JSON data with type and sequence_number, no [DONE], routing headers
    with httpx.stream("POST", resp_gw.base_url + "/responses", json={"model": "m2", "input": "wire", "stream": True},
                      timeout=30) as r:
        body = r.read().decode()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-tierwise-model"] == "m2" and r.headers["x-request-id"].startswith("resp_")
    assert "[DONE]" not in body
    events = _sse_events(body)
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["id"] == r.headers["x-request-id"]


def test_function_tool_round_trip(resp_gw, fresh_stub):
    client = resp_gw.client()
    first = client.responses.create(model="m0", input="Weather in Paris for 3 days?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == tool_call_arguments(WEATHER_CHAT) == {"city": "Paris", "days": 3}
    assert first.output_text == ""
    (req,) = _chat_requests(fresh_stub)
    assert req["body"]["tools"] == [WEATHER_CHAT] and req["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris for 3 days?"}]

    # stateless follow-up: the client sends the whole conversation back, output items included
    fresh_stub.reset()
    follow = client.responses.create(model="m2", input=[
        {"role": "user", "content": "Weather in Paris for 3 days?"}, *[o.model_dump(exclude_none=True) for o in
                                                                      first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}])
    assert follow.output_text.startswith("echo:")
    (req,) = _chat_requests(fresh_stub)
    assert req["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris for 3 days?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp_c": 18}'}]

    # stateful follow-up: previous_response_id + only the tool output
    fresh_stub.reset()
    again = client.responses.create(model="m2", previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert again.previous_response_id == first.id
    (req,) = _chat_requests(fresh_stub)
    assert req["body"]["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert req["body"]["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_streamed_function_call(resp_gw, fresh_stub):
    client = resp_gw.client()
    events = list(client.responses.create(model="m0", input="weather?", tools=[WEATHER], tool_choice="required",
                                          stream=True))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert set(types[3:-3]) == {"response.function_call_arguments.delta"}
    assert events[2].item.type == "function_call" and events[2].item.name == "get_weather"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == tool_call_arguments(WEATHER_CHAT)
    (fc,) = events[-1].response.output
    assert fc.arguments == args and fc.call_id.startswith("call_")
    assert _chat_requests(fresh_stub)[0]["body"]["tool_choice"] == "required"
    with client.responses.stream(model="m0", input="weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output[0].arguments) == {"city": "Paris", "days": 3}


def test_previous_response_id_follow_ups(resp_gw, fresh_stub):
    client = resp_gw.client()
    r1 = client.responses.create(model="m2", input="first question", instructions="rules one")
    r2 = client.responses.create(model="m2", input="second question", previous_response_id=r1.id,
                                 instructions="rules two")
    assert r2.output_text == "echo: second question" and r2.previous_response_id == r1.id
    # a streamed turn is stored too, once it completed
    with client.responses.stream(model="m2", input="third question", previous_response_id=r2.id) as stream:
        r3 = stream.get_final_response()
    r4 = client.responses.create(model="m2", input="fourth", previous_response_id=r3.id)
    bodies = [r["body"] for r in _chat_requests(fresh_stub)]
    assert bodies[1]["messages"] == [  # instructions are not carried over; the earlier turn is
        {"role": "system", "content": "rules two"}, {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"}, {"role": "user", "content": "second question"}]
    assert bodies[3]["messages"] == [
        {"role": "user", "content": "first question"}, {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "second question"}, {"role": "assistant", "content": "echo: second question"},
        {"role": "user", "content": "third question"}, {"role": "assistant", "content": "echo: third question"},
        {"role": "user", "content": "fourth"}]
    assert r4.output_text == "echo: fourth"


def test_unknown_previous_response_id_is_404(resp_gw, fresh_stub):
    r = httpx.post(resp_gw.base_url + "/responses", timeout=30,
                   json={"model": "m2", "input": "hi", "previous_response_id": "resp_doesnotexist"})
    err = _assert_error_shape(r, 404)
    assert err == {"message": "Previous response with id 'resp_doesnotexist' not found.",
                   "type": "invalid_request_error", "param": "previous_response_id",
                   "code": "previous_response_not_found"}
    with pytest.raises(openai.NotFoundError):
        resp_gw.client().responses.create(model="m2", input="hi", previous_response_id="resp_nope")
    assert fresh_stub.requests == []


def test_store_false_is_not_kept(resp_gw, fresh_stub):
    client = resp_gw.client()
    r = client.responses.create(model="m2", input="forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m2", input="again", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_retrieve_and_delete(resp_gw, fresh_stub):
    client = resp_gw.client()
    r = client.responses.create(model="m2", input="keep me", metadata={"a": "b"})
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "echo: keep me" and got.metadata == {"a": "b"}
    assert got.model_dump() == r.model_dump()
    with pytest.raises(openai.BadRequestError) as e:  # re-streaming a stored response: said, not ignored
        list(client.responses.retrieve(r.id, stream=True))
    assert e.value.body["param"] == "stream"
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    err = _assert_error_shape(httpx.delete(resp_gw.base_url + f"/responses/{r.id}", timeout=30), 404)
    assert r.id in err["message"]
    log = DecisionLog(resp_gw.log)
    try:
        assert log.get_response(r.id) is None  # deleted from the database too
    finally:
        log.close()


def test_stored_turn_in_the_database(resp_gw, fresh_stub):
    r = resp_gw.client().responses.create(model="m2", input="store me", instructions="sys")
    deadline = time.monotonic() + 10
    while True:
        import sqlite3

        with sqlite3.connect(resp_gw.log) as con:
            rows = con.execute("SELECT id, key_hash, messages, response FROM responses WHERE id = ?",
                               (r.id,)).fetchall()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ((_, key_hash, messages, response),) = rows
    assert key_hash is None  # no client keys configured
    assert json.loads(messages) == [{"role": "user", "content": "store me"},
                                    {"role": "assistant", "content": "echo: store me"}]
    assert json.loads(response)["output"][0]["content"][0]["text"] == "echo: store me"


class Answer(BaseModel):
    answer: str
    confidence: float


def test_text_format_json_schema_parses(resp_gw, fresh_stub):
    client = resp_gw.client()
    parsed = client.responses.parse(model="m0", input="answer me", text_format=Answer)
    assert parsed.output_parsed == Answer(answer="Paris", confidence=2.5)
    fmt = _chat_requests(fresh_stub)[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["strict"] is True and set(fmt["json_schema"]["schema"]["properties"]) == {
        "answer", "confidence"}
    fresh_stub.reset()
    r = client.responses.create(model="m0", input="as json", text={"format": {"type": "json_object"}})
    assert json.loads(r.output_text) == {"echo": "as json"}
    assert _chat_requests(fresh_stub)[0]["body"]["response_format"] == {"type": "json_object"}


def test_builtin_tool_is_400(resp_gw, fresh_stub):
    with pytest.raises(openai.BadRequestError) as ei:
        resp_gw.client().responses.create(model="m0", input="search", tools=[{"type": "web_search"}])
    err = ei.value.body
    assert err["param"] == "tools[0].type" and "'web_search'" in err["message"] and err["type"] == "invalid_request_error"
    assert fresh_stub.requests == []


def test_image_input(resp_gw, text_gw, fresh_stub):
    image_input = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                                {"type": "input_image", "image_url": PNG, "detail": "low"}]}]
    r = httpx.post(text_gw.base_url + "/responses", json={"model": "tierwise", "input": image_input}, timeout=30)
    err = _assert_error_shape(r, 400)
    assert err["code"] == "unsupported_capability" and "vision" in err["message"]
    assert err["param"] == "input"  # the engine checked the chat body; the error names this surface's field
    assert fresh_stub.requests == []
    resp = resp_gw.client().responses.create(model="m2", input=image_input)
    assert resp.status == "completed"
    assert _chat_requests(fresh_stub)[0]["body"]["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": PNG, "detail": "low"}}


@pytest.mark.parametrize("content, param, status", [
    (b'{"model": "m2"}', "input", 400),
    (b'{"model": "m2", "input": [{"type": "not_an_item"}]}', "input[0].type", 400),
    (b'{"model": "m2", "input": [{"role": "user", "content": 7}]}', "input[0].content", 400),
    (b'{"model": "m2", "input": "x", "tools": [{"type": "file_search"}]}', "tools[0].type", 400),
    (b'{"model": "m2", "input": "x"', None, 400),
    (b'', None, 400),
    (b'{"model": "nope", "input": "x"}', "model", 404),
])
def test_malformed_http_requests(resp_gw, fresh_stub, content, param, status):
    r = httpx.post(resp_gw.base_url + "/responses", content=content, timeout=30,
                   headers={"content-type": "application/json"})
    err = _assert_error_shape(r, status)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert fresh_stub.requests == []


def test_malformed_requests_via_sdk(resp_gw):
    client = resp_gw.client()
    with pytest.raises(openai.BadRequestError) as ei:
        client.responses.create(model="m2", input=[{"type": "computer_call_output", "call_id": "c", "output": {}}])
    assert ei.value.body["param"] == "input[0].type"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m2", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-123", "detail": "auto"}]}])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_" + "0" * 32)


def test_upstream_400_is_returned_as_is_after_one_call(reject_gw, fresh_stub):
    r = httpx.post(reject_gw.base_url + "/responses", json={"model": "m0", "input": "hi"}, timeout=30)
    assert r.status_code == 400 and r.json() == StubBackend.reject_body("reject-400")
    assert len(_chat_requests(fresh_stub)) == 1 and r.headers["x-request-id"].startswith("resp_")
    fresh_stub.reset()
    r = httpx.post(reject_gw.base_url + "/responses", json={"model": "m0", "input": "hi", "stream": True}, timeout=30)
    assert r.status_code == 400 and r.json() == StubBackend.reject_body("reject-400")
    assert len(_chat_requests(fresh_stub)) == 1


def test_fallback_on_server_error(fault_gw, fresh_stub):
    raw = fault_gw.client().responses.with_raw_response.create(model="m0", input="fall back")
    resp = raw.parse()
    assert resp.model == "m1" and resp.output_text == "echo: fall back"
    assert raw.headers["x-tierwise-fallbacks"] == "m0" and raw.headers["x-tierwise-model"] == "m1"
    row = fault_gw.row(resp.id)
    assert row["surface"] == "responses" and [f["model"] for f in row["fallbacks"]] == ["m0"]


def test_mid_stream_failure_ends_with_response_failed(fault_gw, fresh_stub):
    seen = []
    with pytest.raises(openai.APIError) as ei:
        for ev in fault_gw.client().responses.create(model="m2", input="stall after one", stream=True):
            seen.append(ev)
    types = [e.type for e in seen]
    assert types[:5] == TEXT_EVENTS + ["response.output_text.delta"] and types[-1] == "response.failed"
    assert seen[-1].response.status == "failed" and seen[-1].response.error.code == "server_error"
    assert "m2" in str(ei.value)
    row = fault_gw.row(seen[0].response.id)
    assert row["status"] == 502 and row["surface"] == "responses" and row["stream"] is True


def test_decision_log_rows(resp_gw, fresh_stub):
    client = resp_gw.client()
    raw = client.responses.with_raw_response.create(model="m2", input="log me")
    resp = raw.parse()
    row = resp_gw.row(resp.id)
    assert row["id"] == resp.id == raw.headers["x-request-id"] and row["surface"] == "responses"
    assert row["model"] == "m2" and row["status"] == 200 and row["stream"] is False
    assert (row["tokens_in"], row["tokens_out"]) == (resp.usage.input_tokens, resp.usage.output_tokens)
    assert abs(row["cost_usd"] - float(raw.headers["x-tierwise-cost-usd"])) < 1e-12
    # a request refused before routing is logged too, on its surface
    r = httpx.post(resp_gw.base_url + "/responses", json={"model": "m2", "input": [{"type": "bogus"}]}, timeout=30)
    rid = r.headers["x-request-id"]
    row = resp_gw.row(rid)
    assert row["status"] == 400 and row["surface"] == "responses" and row["requested_model"] == "m2"


def test_stats_counts_every_surface(stub, gateway, fresh_stub):
    gw = gateway(stub.url, ("echo@rst0", "echo@rst1"), label="resp-stats")
    client = gw.client()
    client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "chat"}])
    client.responses.create(model="m0", input="responses one")
    list(client.responses.create(model="m1", input="responses two", stream=True))
    gw.rows(want=3)
    out = subprocess.run([sys.executable, "-c", "from tierwise.cli import main; main()", "stats", "--config",
                          str(gw.cfg), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["requests"] == 3 and s["answered"] == 3 and s["surfaces"] == {"responses": 2, "chat": 1}
    assert s["models"]["m0"]["requests"] == 2 and s["models"]["m1"]["requests"] == 1
    out = subprocess.run([sys.executable, "-c", "from tierwise.cli import main; main()", "stats", "--config",
                          str(gw.cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "surfaces: responses 2, chat 1" in out.stdout, out.stdout + out.stderr


def test_ttl_from_the_pyramid_expires_stored_responses(stub, gateway, fresh_stub):
    gw = gateway(stub.url, ("echo@rttl0",), extra="responses_ttl_days: 0.00002\n", label="resp-ttl")  # ~1.7 s
    client = gw.client()
    r = client.responses.create(model="m0", input="short-lived")
    assert client.responses.retrieve(r.id).id == r.id
    time.sleep(2.0)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m0", input="still there?", previous_response_id=r.id)


def test_cascade_on_the_responses_surface(stub, gateway, tmp_path, fresh_stub):
    from tierwise.cascade import Thresholds

    th = Thresholds(["m0", "m1", "m2"], [-1.0, -1.0]).save(tmp_path / "cascade.json")
    gw = gateway(stub.url, ("unsure@rcs0", "confident@rcs1", "echo@rcs2"), extra=f"cascade: {th}\n",
                 label="resp-cascade")
    client = gw.client()
    raw = client.responses.with_raw_response.create(model="tierwise:cascade", input="capital of France?")
    resp = raw.parse()
    assert resp.model == "m1" and resp.output_text == "echo: capital of France?"
    assert raw.headers["x-tierwise-router"] == "cascade"
    assert raw.headers["x-tierwise-cascade-chain"] == "m0:-3.00:escalated,m1:-0.05:kept"
    events = list(client.responses.create(model="tierwise:cascade", input="streamed", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.model == "m1"
    assert events[-1].response.output_text == "echo: streamed"
    row = gw.row(resp.id)
    assert row["surface"] == "responses" and [s["outcome"] for s in row["cascade_chain"]] == ["escalated", "kept"]


def test_non_json_content_type_is_415(resp_gw, fresh_stub):
    r = httpx.post(resp_gw.base_url + "/responses", content=b"model=m2&input=hi", timeout=30,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert _assert_error_shape(r, 415)["code"] == "unsupported_media_type"
    assert fresh_stub.requests == []


def test_client_keys(keys_gw, fresh_stub):
    with pytest.raises(openai.AuthenticationError):
        keys_gw.client(api_key="wrong").responses.create(model="m0", input="hi")
    assert fresh_stub.requests == []
    alice, bob = keys_gw.client(api_key=KEYS[0]), keys_gw.client(api_key=KEYS[1])
    r = alice.responses.create(model="m0", input="alice's secret")
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="m0", input="what did alice say?", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(r.id)
    assert alice.responses.retrieve(r.id).output_text == "echo: alice's secret"
    follow = alice.responses.create(model="m0", input="and now?", previous_response_id=r.id)
    assert follow.output_text == "echo: and now?"
    assert fresh_stub.bodies()[-1]["messages"][0] == {"role": "user", "content": "alice's secret"}
    assert httpx.get(keys_gw.base_url + f"/responses/{r.id}", timeout=30).status_code == 401
    # an admin key may read it; the stored turn and the decision-log row name alice's key (hashed)
    assert keys_gw.client(api_key=KEYS[2]).responses.retrieve(r.id).id == r.id
    row = keys_gw.row(r.id)
    assert row["surface"] == "responses" and row["key_hash"] and KEYS[0] not in json.dumps(row)
    log = DecisionLog(keys_gw.log)
    try:
        assert log.get_response(r.id)["key_hash"] == row["key_hash"]
    finally:
        log.close()


# == slow: the embedded local pyramid ====================================================================


@pytest.fixture(scope="module")
def local_gw(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'tierwise[local]')")
    from tierwise.weights import WeightsError, model_path

    try:
        model_path("qwen2.5-coder-0.5b")
    except WeightsError as exc:
        pytest.skip(f"Qwen2.5-Coder-0.5B weights not installed: {exc}")
    tmp = tmp_path_factory.mktemp("resp-local")
    cfg = tmp / "pyramid.yaml"
    cfg.write_text(f"""models:
  - name: qwen-0.5b
    backend: llama_cpp
    embedded: qwen2.5-coder-0.5b
    input_per_1m: 0.02
    output_per_1m: 0.04
    context_window: 2048
    timeout_s: 300
    n_threads: 2
log: {tmp / 'log.sqlite'}
""")
    gw = Gateway.start(cfg)
    yield gw
    gw.stop()


@pytest.mark.slow
def test_local_pyramid_text_and_stream(local_gw):
    client = local_gw.client(timeout=300)
    r = client.responses.create(model="tierwise", input="What is 2+2? Answer with one number.",
                                instructions="You are terse.", max_output_tokens=16, temperature=0)
    assert r.model == "qwen-0.5b" and r.status in ("completed", "incomplete") and "4" in r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    follow = client.responses.create(model="tierwise", input="And 3+3?", previous_response_id=r.id,
                                     max_output_tokens=16, temperature=0)
    assert follow.output_text.strip()
    events = list(client.responses.create(model="qwen-0.5b", input="Say hello.", max_output_tokens=16,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:4] == TEXT_EVENTS and types[-1] in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text and text.strip()
    row = local_gw.row(r.id)
    assert row["surface"] == "responses" and row["model"] == "qwen-0.5b"


@pytest.mark.slow
def test_local_pyramid_function_call(local_gw):
    from tierwise.backends.llama_local import LlamaBackend

    if not hasattr(LlamaBackend, "complete"):
        pytest.skip("LlamaBackend has no body-in/body-out complete() yet")
    client = local_gw.client(timeout=300)
    r = client.responses.create(model="qwen-0.5b", input="What is the weather in Paris for the next 3 days?",
                                tools=[WEATHER], tool_choice="required", max_output_tokens=96, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    args = json.loads(calls[0].arguments)
    assert isinstance(args.get("city"), str) and isinstance(args.get("days"), int)
    follow = client.responses.create(model="qwen-0.5b", previous_response_id=r.id, max_output_tokens=48,
                                     temperature=0, input=[{"type": "function_call_output",
                                                            "call_id": calls[0].call_id, "output": "sunny, 18C"}])
    assert follow.status in ("completed", "incomplete")
    with client.responses.stream(model="qwen-0.5b", input="Weather in Rome tomorrow?", tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=96, temperature=0) as stream:
        final = stream.get_final_response()
    assert [o.type for o in final.output if o.type == "function_call"] and \
        json.loads(final.output[-1].arguments).get("city")


def test_context_errors_name_the_responses_fields(stub, gateway):
    gw = gateway(stub.url, ("echo@rcx0",), context_window=256, label="resp-small-context")
    r = httpx.post(gw.base_url + "/responses", json={"model": "tierwise", "input": "word " * 600,
                                                     "max_output_tokens": 5}, timeout=30)
    err = _assert_error_shape(r, 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "input"
    assert "max_output_tokens=5" in err["message"] and "max_tokens" not in err["message"].replace("max_output_tokens", "")
