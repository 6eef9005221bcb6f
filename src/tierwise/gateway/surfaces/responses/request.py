"""A Responses request as the chat-completions body the engine routes: pure functions, no I/O.

:func:`parse_request` checks a ``POST /v1/responses`` body (``schema``: OpenAI-style 400s naming the
field, e.g. ``input[2].content[0].image_url``) and converts its input items to chat messages
(``items``); :func:`chat_body` then builds the chat-completions body, with the stored conversation
of ``previous_response_id`` (if any) in front of this turn.

What maps to what (the rest is echoed on the Response object but not sent upstream):

==========================================  ================================================
Responses                                   chat completions
==========================================  ================================================
``instructions``                            first ``system`` message (not carried over turns)
``input`` string                            one ``user`` message
``{"role": ..., "content": ...}`` items     messages (``developer`` -> ``system``); parts
                                            ``input_text``/``output_text`` -> text,
                                            ``input_image`` -> ``image_url``
``function_call`` items                     assistant ``tool_calls`` (consecutive ones merge)
``function_call_output`` items              ``tool`` messages
``tools`` (function tools only)             ``tools``; built-in tools are a 400
``tool_choice``                             ``tool_choice``
``text.format`` json_schema / json_object   ``response_format``
``max_output_tokens``                       ``max_tokens``
``temperature``, ``top_p``, ``user``        the same
``top_logprobs``, ``include`` logprobs      ``logprobs`` + ``top_logprobs``
``parallel_tool_calls``                     the same (only with tools)
``metadata``, ``reasoning``, ``store``,     not sent upstream (echoed)
``truncation``, ``text.verbosity`` ...
==========================================  ================================================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ....engine.body import load_json
from .._chat import forced_tool, function_tool, orphan_tool_result
from .items import items_to_messages
from .schema import _FunctionTool, _Request, _TextFormat, bad, validate

__all__ = ["BUILTIN_TOOLS", "ResponsesCall", "parse_request", "chat_body"]

# tool types the Responses API runs on OpenAI's side; tierwise has nothing to run them with
BUILTIN_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
                 "computer_use_preview", "computer", "computer_use", "code_interpreter", "image_generation",
                 "mcp", "local_shell", "shell", "apply_patch", "custom", "tool_search")
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


@dataclass
class ResponsesCall:
    """One checked ``/v1/responses`` request: what goes upstream and what the Response echoes."""

    body: dict[str, Any]  # the client's, untouched
    model: str
    turn: list[dict[str, Any]]  # this turn's input as chat messages (without the instructions)
    instructions: str | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None  # chat tools
    tool_choice: Any = None  # chat tool_choice
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # the request fields the Response object repeats


def parse_request(raw: bytes | str | dict[str, Any]) -> ResponsesCall:
    """Check a Responses request and convert its input; raises :class:`RequestError` (400) naming the field."""
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            body = load_json(raw)
        except ValueError as exc:
            raise bad(f"We could not parse the JSON body of your request: {exc}", None, "invalid_json") from None
    else:
        body = raw
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", None, "invalid_json")
    req: _Request = validate(_Request, body, "")
    if req.background:
        raise bad("background responses are not supported by tierwise; send background: false", "background",
                  "unsupported_parameter")
    for name in ("conversation", "prompt"):
        if body.get(name) is not None:
            raise bad(f"'{name}' is not supported by tierwise; send the input itself (and previous_response_id "
                      "to continue a conversation)", name, "unsupported_parameter")

    turn = items_to_messages(req.input, prefix="input") if isinstance(req.input, list) else \
        [{"role": "user", "content": req.input}]
    tools = _chat_tools(req.tools)
    tool_choice = _chat_tool_choice(req.tool_choice)
    fmt = req.text.format if req.text is not None else None
    include = req.include or []
    text_echo = copy.deepcopy(body.get("text")) if isinstance(body.get("text"), dict) else {}
    text_echo.setdefault("format", {"type": "text"})
    echo = {
        "instructions": req.instructions,
        "tools": [_echo_tool(t) for t in req.tools or []],
        "tool_choice": copy.deepcopy(req.tool_choice) if req.tool_choice is not None else "auto",
        "text": text_echo,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_logprobs": req.top_logprobs,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": copy.deepcopy(req.reasoning) if req.reasoning is not None else {"effort": None, "summary": None},
        "metadata": dict(req.metadata or {}),
        "store": True if req.store is None else req.store,
        "truncation": req.truncation or "disabled",
        "user": req.user,
        "background": False,
    }
    return ResponsesCall(
        body=body, model=req.model, turn=turn, instructions=req.instructions, stream=bool(req.stream),
        store=echo["store"], previous_response_id=req.previous_response_id, tools=tools, tool_choice=tool_choice,
        response_format=_response_format(fmt),
        logprobs=_LOGPROBS_INCLUDE in include or req.top_logprobs is not None,
        top_logprobs=req.top_logprobs or None, echo=echo)


def chat_body(call: ResponsesCall, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat-completions body for ``call``: instructions, then the stored conversation, then this turn."""
    messages: list[dict[str, Any]] = []
    if call.instructions:
        messages.append({"role": "system", "content": call.instructions})
    messages += copy.deepcopy(history or [])
    messages += copy.deepcopy(call.turn)
    if not any(m.get("role") != "system" for m in messages):
        raise bad("'input' has no messages to answer (send a string or at least one input item).", "input",
                  "invalid_value")
    orphan = orphan_tool_result(messages)
    if orphan is not None:  # OpenAI's own words
        raise bad(f"No tool call found for function call output with call_id {orphan}.", "input", "invalid_value")
    body: dict[str, Any] = {"model": call.model, "messages": messages}
    e = call.echo
    for key in ("temperature", "top_p", "user"):
        if e.get(key) is not None:
            body[key] = e[key]
    if e.get("max_output_tokens") is not None:
        body["max_tokens"] = e["max_output_tokens"]
    if call.tools:
        body["tools"] = copy.deepcopy(call.tools)
        if call.tool_choice is not None:
            body["tool_choice"] = copy.deepcopy(call.tool_choice)
        if call.body.get("parallel_tool_calls") is not None:
            body["parallel_tool_calls"] = bool(call.body["parallel_tool_calls"])
    if call.response_format is not None:
        body["response_format"] = copy.deepcopy(call.response_format)
    if call.logprobs:
        body["logprobs"] = True
        if call.top_logprobs:
            body["top_logprobs"] = call.top_logprobs
    if call.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the final response.completed carries usage
    return body


def _chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            where = f"tools[{i}].type"
            if kind is None:
                raise bad(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
            what = "built-in tool" if kind in BUILTIN_TOOLS else "tool"
            raise bad(f"{what} type '{kind}' is not supported by tierwise: only function tools "
                      "({\"type\": \"function\", \"name\": ..., \"parameters\": ...}) are", where,
                      "unsupported_tool")
        t: _FunctionTool = validate(_FunctionTool, tool, f"tools[{i}]")
        out.append(function_tool(t.name, description=t.description, parameters=t.parameters, strict=t.strict))
    return out


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": tool.get("name"), "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def _chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad(f"Invalid value for 'tool_choice': '{choice}' (expected auto, none, required or "
                      "{\"type\": \"function\", \"name\": ...}).", "tool_choice", "invalid_value")
        return choice
    if choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad("Missing required parameter: 'tool_choice.name'.", "tool_choice.name",
                      "missing_required_parameter")
        return forced_tool(name)
    raise bad(f"tool_choice type '{choice.get('type')}' is not supported by tierwise (supported: auto, none, "
              "required, {\"type\": \"function\", \"name\": ...})", "tool_choice.type", "unsupported_value")


def _response_format(fmt: _TextFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.name is None:
        raise bad("Missing required parameter: 'text.format.name'.", "text.format.name", "missing_required_parameter")
    if fmt.schema_ is None:
        raise bad("Missing required parameter: 'text.format.schema'.", "text.format.schema",
                  "missing_required_parameter")
    spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    if fmt.description is not None:
        spec["description"] = fmt.description
    return {"type": "json_schema", "json_schema": spec}
