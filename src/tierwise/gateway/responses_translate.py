"""The OpenAI Responses API in terms of chat completions: pure functions, no I/O.

Three translations, each unit-tested on its own (``tests/test_gateway_responses.py``):

* request: :func:`parse_request` checks a ``POST /v1/responses`` body (OpenAI-style 400s naming the
  field, e.g. ``input[2].content[0].image_url``) and converts its input items to chat messages;
  :func:`chat_body` then builds the chat-completions body the engine routes, with the stored
  conversation of ``previous_response_id`` (if any) in front of this turn;
* answer: :func:`response_object` turns a ``chat.completion`` into a ``response`` object;
* stream: :class:`StreamTranslator` turns ``chat.completion.chunk`` dicts into the Responses event
  sequence (``response.created`` ... ``response.completed``), each with ``type`` and ``sequence_number``.

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
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import RequestError

__all__ = ["BUILTIN_TOOLS", "ResponsesCall", "StreamTranslator", "chat_body", "completion_to_response",
           "items_to_messages", "new_response_id", "output_items", "parse_request", "response_object",
           "response_usage"]

# tool types the Responses API runs on OpenAI's side; tierwise has nothing to run them with
BUILTIN_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
                 "computer_use_preview", "computer", "computer_use", "code_interpreter", "image_generation",
                 "mcp", "local_shell", "shell", "apply_patch", "custom", "tool_search")

_ROLE = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text")
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


def new_response_id() -> str:
    """``resp_`` + 32 hex digits (128 bits from the OS's CSPRNG): also the decision-log row id."""
    return "resp_" + secrets.token_hex(16)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _bad(message: str, param: str | None, code: str = "invalid_value", status: int = 400) -> RequestError:
    return RequestError(message, status=status, param=param, code=code)


# -- request validation ------------------------------------------------------------------------------


class _TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    type: Literal["text", "json_schema", "json_object"]
    name: str | None = Field(None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class _TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    format: _TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class _Request(BaseModel):
    """The fields tierwise reads, strictly (no coercion); unknown fields are accepted and not sent upstream."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: _TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    include: list[str] | None = None
    background: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    max_tool_calls: int | None = Field(None, ge=1)


class _MessageItem(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]


class _FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class _FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[dict[str, Any]]


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _is_type_label(part: str) -> bool:
    """pydantic puts union members into ``loc`` (``str``, ``list[dict[str,any]]``, ``_TextFormat``)."""
    return part in ("str", "int", "float", "bool", "none") or part.startswith(("list[", "dict[", "literal[", "_")) \
        or "function-" in part


def _param(prefix: str, loc: tuple) -> str:
    out = prefix
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and not _is_type_label(p):
            out = f"{out}.{p}" if out else p
    return out


def _validation_error(exc: ValidationError, prefix: str = "") -> RequestError:
    """The first problem, as OpenAI's Responses API words it: 400 with the field path as ``param``."""
    err = exc.errors()[0]
    param = _param(prefix, tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "missing":
        return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if param == "input" and kind in ("string_type", "list_type"):
        return _bad("Invalid type for 'input': expected a string or an array of input items.", param,
                    "invalid_type")
    if kind.endswith("_type") or kind in ("model_type", "dict_type"):
        return _bad(f"Invalid type for '{param}': {err.get('msg')}.", param or None, "invalid_type")
    return _bad(f"Invalid value for '{param}': {err.get('msg')}.", param or None, "invalid_value")


def _validate(model: type[BaseModel], obj: Any, prefix: str) -> BaseModel:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _validation_error(exc, prefix) from None


# -- the parsed request ----------------------------------------------------------------------------


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
            body = json.loads(raw)
        except ValueError as exc:
            raise _bad(f"We could not parse the JSON body of your request: {exc}", None, "invalid_json") from None
    else:
        body = raw
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None, "invalid_json")
    req = _validate(_Request, body, "")
    assert isinstance(req, _Request)
    if req.background:
        raise _bad("background responses are not supported by tierwise; send background: false", "background",
                   "unsupported_parameter")
    for name in ("conversation", "prompt"):
        if body.get(name) is not None:
            raise _bad(f"'{name}' is not supported by tierwise; send the input itself (and previous_response_id "
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
        raise _bad("'input' has no messages to answer (send a string or at least one input item).", "input",
                   "invalid_value")
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


# -- input items -> chat messages --------------------------------------------------------------------


def items_to_messages(items: list[Any], *, prefix: str = "input") -> list[dict[str, Any]]:
    """Responses input items (or a Response's output items) as chat messages.

    Consecutive ``function_call`` items, and a ``function_call`` right after an assistant message,
    become one assistant message with several ``tool_calls`` (as chat models expect them).
    ``reasoning`` items are dropped (no chat equivalent); other item types are a 400 naming them.
    """
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type")
        if kind is None and "role" not in item:
            raise _bad(f"Missing required parameter: '{where}.type' (or '{where}.role' for a message).",
                       f"{where}.type", "missing_required_parameter")
        if kind in (None, "message"):
            msg = _validate(_MessageItem, item, where)
            out.append(_message(msg.role, msg.content, where))  # type: ignore[attr-defined]
        elif kind == "function_call":
            fc = _validate(_FunctionCallItem, item, where)
            call = {"id": fc.call_id, "type": "function",  # type: ignore[attr-defined]
                    "function": {"name": fc.name, "arguments": fc.arguments}}  # type: ignore[attr-defined]
            last = out[-1] if out else None
            if last is not None and last.get("role") == "assistant":
                if not last.get("tool_calls"):
                    last["tool_calls"] = []
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            fo = _validate(_FunctionCallOutputItem, item, where)
            out.append({"role": "tool", "tool_call_id": fo.call_id,  # type: ignore[attr-defined]
                        "content": _tool_output(fo.output, f"{where}.output")})  # type: ignore[attr-defined]
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise _bad(f"'{where}': item references are not supported by tierwise; send the item itself or use "
                       "previous_response_id", f"{where}.type", "unsupported_value")
        else:
            raise _bad(f"'{where}': input item type '{kind}' is not supported by tierwise (supported: message, "
                       "function_call, function_call_output)", f"{where}.type", "unsupported_value")
    return out


def _message(role: str, content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    chat_role = _ROLE[role]
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{where}.content[{j}]"
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"Missing required parameter: '{p}.text'.", f"{p}.text", "missing_required_parameter")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            if role != "user":
                raise _bad(f"'{p}': images are only allowed in user messages", f"{p}.type", "invalid_value")
            if part.get("file_id") is not None and part.get("image_url") is None:
                raise _bad(f"'{p}.file_id': file ids are not supported by tierwise (no Files API); send "
                           "image_url (an https:// or data: URL)", f"{p}.file_id", "unsupported_value")
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _bad(f"Missing required parameter: '{p}.image_url'.", f"{p}.image_url",
                           "missing_required_parameter")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind is None:
            raise _bad(f"Missing required parameter: '{p}.type'.", f"{p}.type", "missing_required_parameter")
        else:
            raise _bad(f"'{p}': content type '{kind}' is not supported by tierwise (supported: input_text, "
                       "output_text, input_image)", f"{p}.type", "unsupported_value")
    if chat_role != "user" or all(x["type"] == "text" for x in parts) and len(parts) <= 1:
        text = "".join(x["text"] for x in parts)
        return {"role": chat_role, "content": text}
    return {"role": chat_role, "content": parts}


def _tool_output(output: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, part in enumerate(output):
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise _bad(f"'{where}[{j}]': only text parts are supported in a function_call_output by tierwise",
                       f"{where}[{j}].type", "unsupported_value")
    return "".join(texts)


# -- tools, tool_choice, text.format -------------------------------------------------------------------


def _chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            where = f"tools[{i}].type"
            if kind is None:
                raise _bad(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
            what = "built-in tool" if kind in BUILTIN_TOOLS else "tool"
            raise _bad(f"{what} type '{kind}' is not supported by tierwise: only function tools "
                       "({\"type\": \"function\", \"name\": ..., \"parameters\": ...}) are", where,
                       "unsupported_tool")
        t = _validate(_FunctionTool, tool, f"tools[{i}]")
        fn: dict[str, Any] = {"name": t.name}  # type: ignore[attr-defined]
        for key in ("description", "parameters", "strict"):
            if getattr(t, key) is not None:
                fn[key] = getattr(t, key)
        out.append({"type": "function", "function": fn})
    return out


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": tool.get("name"), "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def _chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _bad(f"Invalid value for 'tool_choice': '{choice}' (expected auto, none, required or "
                       "{\"type\": \"function\", \"name\": ...}).", "tool_choice", "invalid_value")
        return choice
    if choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("Missing required parameter: 'tool_choice.name'.", "tool_choice.name",
                       "missing_required_parameter")
        return {"type": "function", "function": {"name": name}}
    raise _bad(f"tool_choice type '{choice.get('type')}' is not supported by tierwise (supported: auto, none, "
               "required, {\"type\": \"function\", \"name\": ...})", "tool_choice.type", "unsupported_value")


def _response_format(fmt: _TextFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.name is None:
        raise _bad("Missing required parameter: 'text.format.name'.", "text.format.name", "missing_required_parameter")
    if fmt.schema_ is None:
        raise _bad("Missing required parameter: 'text.format.schema'.", "text.format.schema",
                   "missing_required_parameter")
    spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    if fmt.description is not None:
        spec["description"] = fmt.description
    return {"type": "json_schema", "json_schema": spec}


# -- chat.completion -> response -------------------------------------------------------------------


def response_usage(usage: dict[str, Any] | None, fallback: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """Chat ``usage`` as Responses ``usage`` (``fallback``: the engine's token counts when there is none)."""
    if not isinstance(usage, dict):
        if fallback is None:
            return None
        usage = {"prompt_tokens": fallback[0], "completion_tokens": fallback[1]}
    t_in = int(usage.get("prompt_tokens") or 0)
    t_out = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": t_in, "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
            "output_tokens": t_out, "output_tokens_details": {"reasoning_tokens": int(reasoning)},
            "total_tokens": int(usage.get("total_tokens") or t_in + t_out)}


def _logprobs(choice_logprobs: Any) -> list[dict[str, Any]]:
    content = choice_logprobs.get("content") if isinstance(choice_logprobs, dict) else None
    out = []
    for lp in content or ():
        if not isinstance(lp, dict):
            continue
        out.append({"token": lp.get("token", ""), "bytes": lp.get("bytes") or list(str(lp.get("token", "")).encode()),
                    "logprob": float(lp.get("logprob") or 0.0),
                    "top_logprobs": [{"token": t.get("token", ""), "bytes": t.get("bytes") or [],
                                      "logprob": float(t.get("logprob") or 0.0)}
                                     for t in lp.get("top_logprobs") or () if isinstance(t, dict)]})
    return out


def _status(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def output_items(choice: dict[str, Any], *, ids: Callable[[str], str] = _item_id,
                 logprobs: bool = True) -> list[dict[str, Any]]:
    """One chat choice as Response output items: a message (text and/or refusal), then function calls.
    ``logprobs``: keep the choice's token log-probabilities (only when the client asked for them: the
    cascade asks backends for logprobs of its own)."""
    msg = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    content = msg.get("content")
    if isinstance(content, list):  # some backends answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    parts: list[dict[str, Any]] = []
    if content or (not calls and not msg.get("refusal")):
        part: dict[str, Any] = {"type": "output_text", "text": content or "", "annotations": []}
        part["logprobs"] = _logprobs(choice.get("logprobs")) if logprobs else []
        parts.append(part)
    if msg.get("refusal"):
        parts.append({"type": "refusal", "refusal": msg["refusal"]})
    items: list[dict[str, Any]] = []
    if parts:
        items.append({"type": "message", "id": ids("msg"), "status": status, "role": "assistant", "content": parts})
    for c in calls:
        fn = c.get("function") or {}
        items.append({"type": "function_call", "id": ids("fc"), "call_id": c.get("id") or ids("call"),
                      "name": fn.get("name") or "", "arguments": fn.get("arguments") or "", "status": "completed"})
    return items


def response_object(call: ResponsesCall, *, response_id: str, model: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, status: str = "completed",
                    incomplete_details: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                    created_at: float | None = None) -> dict[str, Any]:
    """A Response object (every field the SDK's ``Response`` model requires) around ``output``."""
    created = int(created_at if created_at is not None else time.time())
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": incomplete_details,
        "model": model, "output": output, "usage": usage,
        **copy.deepcopy(call.echo),
    }


def completion_to_response(call: ResponsesCall, completion: dict[str, Any], *, response_id: str,
                           created_at: float | None = None, usage_fallback: tuple[int, int] | None = None,
                           ids: Callable[[str], str] = _item_id) -> dict[str, Any]:
    """A finished ``chat.completion`` (first choice) as a Response object."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    status, details = _status(choice.get("finish_reason"))
    return response_object(call, response_id=response_id, model=str(completion.get("model") or call.model),
                           output=output_items(choice, ids=ids, logprobs=call.logprobs),
                           usage=response_usage(completion.get("usage"), usage_fallback),
                           status=status, incomplete_details=details, created_at=created_at)


# -- chat chunks -> Responses events -------------------------------------------------------------------


class StreamTranslator:
    """Chat ``chat.completion.chunk`` dicts in, Responses stream events out (pure; no I/O).

    ``start()`` -> ``response.created``, ``response.in_progress``; ``feed(chunk)`` -> the events that
    chunk causes (``response.output_item.added``, ``response.content_part.added``,
    ``response.output_text.delta``, ``response.refusal.delta``, ``response.function_call_arguments.delta``);
    ``finish()`` closes every open item (``*.done`` events) and ends with ``response.completed`` (or
    ``response.incomplete`` when the model hit ``max_output_tokens``); ``fail(error)`` ends with
    ``response.failed`` and an ``error`` event instead. ``response`` is the final Response object.
    """

    def __init__(self, call: ResponsesCall, *, response_id: str, model: str, created_at: float | None = None,
                 ids: Callable[[str], str] = _item_id):
        self.call, self.response_id, self.model = call, response_id, model
        self.created_at = int(created_at if created_at is not None else time.time())
        self._ids = ids
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._open: set[int] = set()  # output indexes not closed yet
        self._msg: int | None = None  # the open message item's output index
        self._part: int | None = None  # its open content part index
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index (open calls)
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None

    # -- helpers
    def _ev(self, kind: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def _snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        return response_object(self.call, response_id=self.response_id, model=self.model,
                               output=copy.deepcopy(self.output), usage=kw.pop("usage", None), status=status,
                               created_at=self.created_at, **kw)

    def start(self) -> list[dict[str, Any]]:
        snap = self._snapshot("in_progress")
        return [self._ev("response.created", response=snap), self._ev("response.in_progress", response=snap)]

    def _open_message(self) -> list[dict[str, Any]]:
        evs = self._close_calls()
        item = {"type": "message", "id": self._ids("msg"), "status": "in_progress", "role": "assistant", "content": []}
        self.output.append(item)
        self._msg = len(self.output) - 1
        self._open.add(self._msg)
        evs.append(self._ev("response.output_item.added", output_index=self._msg, item=copy.deepcopy(item)))
        return evs

    def _open_part(self, kind: str) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        if self._msg is None:
            evs += self._open_message()
        item = self.output[self._msg]  # type: ignore[index]
        if self._part is not None and item["content"][self._part]["type"] == kind:
            return evs
        evs += self._close_part()
        part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "output_text"
                else {"type": "refusal", "refusal": ""})
        item["content"].append(part)
        self._part = len(item["content"]) - 1
        evs.append(self._ev("response.content_part.added", item_id=item["id"], output_index=self._msg,
                            content_index=self._part, part=_bare_part(part)))
        return evs

    def _close_part(self) -> list[dict[str, Any]]:
        if self._msg is None or self._part is None:
            return []
        item = self.output[self._msg]
        part = item["content"][self._part]
        where = {"item_id": item["id"], "output_index": self._msg, "content_index": self._part}
        if part["type"] == "output_text":
            evs = [self._ev("response.output_text.done", **where, text=part["text"],
                            logprobs=copy.deepcopy(part["logprobs"]))]
        else:
            evs = [self._ev("response.refusal.done", **where, refusal=part["refusal"])]
        evs.append(self._ev("response.content_part.done", **where, part=copy.deepcopy(part)))
        self._part = None
        return evs

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        if self._msg is None:
            return []
        evs = self._close_part()
        item = self.output[self._msg]
        item["status"] = status
        evs.append(self._ev("response.output_item.done", output_index=self._msg, item=copy.deepcopy(item)))
        self._open.discard(self._msg)
        self._msg = None
        return evs

    def _close_calls(self, status: str = "completed") -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        for idx in sorted(self._calls.values()):
            item = self.output[idx]
            item["status"] = status
            evs.append(self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                                name=item["name"], arguments=item["arguments"]))
            evs.append(self._ev("response.output_item.done", output_index=idx, item=copy.deepcopy(item)))
            self._open.discard(idx)
        self._calls.clear()
        return evs

    # -- the stream
    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, list):
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
            if isinstance(text, str) and text:
                evs += self._open_part("output_text")
                part = self.output[self._msg]["content"][self._part]  # type: ignore[index]
                lps = _logprobs(choice.get("logprobs")) if self.call.logprobs else []
                part["text"] += text
                part["logprobs"] += lps
                evs.append(self._ev("response.output_text.delta", item_id=self.output[self._msg]["id"],
                                    output_index=self._msg, content_index=self._part, delta=text, logprobs=lps))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                evs += self._open_part("refusal")
                part = self.output[self._msg]["content"][self._part]  # type: ignore[index]
                part["refusal"] += refusal
                evs.append(self._ev("response.refusal.delta", item_id=self.output[self._msg]["id"],
                                    output_index=self._msg, content_index=self._part, delta=refusal))
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                k = int(tc.get("index") or 0)
                fn = tc.get("function") or {}
                if k not in self._calls:
                    evs += self._close_message()
                    item = {"type": "function_call", "id": self._ids("fc"), "call_id": tc.get("id") or self._ids("call"),
                            "name": fn.get("name") or "", "arguments": "", "status": "in_progress"}
                    self.output.append(item)
                    self._calls[k] = len(self.output) - 1
                    self._open.add(self._calls[k])
                    evs.append(self._ev("response.output_item.added", output_index=self._calls[k],
                                        item=copy.deepcopy(item)))
                elif fn.get("name"):
                    self.output[self._calls[k]]["name"] += fn["name"]
                idx = self._calls[k]
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    self.output[idx]["arguments"] += args
                    evs.append(self._ev("response.function_call_arguments.delta", item_id=self.output[idx]["id"],
                                        output_index=idx, delta=args))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return evs

    def finish(self, usage_fallback: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Close what is open and end with ``response.completed`` (or ``response.incomplete``)."""
        status, details = _status(self.finish_reason)
        evs: list[dict[str, Any]] = []
        if not self.output:  # an empty answer is still one (empty) message, as in the non-streamed form
            evs += self._open_part("output_text")
        item_status = "incomplete" if status == "incomplete" else "completed"
        evs += self._close_message(item_status) + self._close_calls()
        self.response = self._snapshot(status, usage=response_usage(self.usage, usage_fallback),
                                       incomplete_details=details)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        evs.append(self._ev(kind, response=copy.deepcopy(self.response)))
        return evs

    def fail(self, error: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The model failed mid-stream: ``response.failed`` (with what was produced), then ``error``."""
        err = error if isinstance(error, dict) else {}
        message = str(err.get("message") or "the model failed while streaming")
        for idx in self._open:
            self.output[idx]["status"] = "incomplete"
        self._open.clear()
        self.response = self._snapshot("failed", error={"code": "server_error", "message": message},
                                       usage=response_usage(self.usage))
        return [self._ev("response.failed", response=copy.deepcopy(self.response)),
                self._ev("error", code=err.get("code") or "server_error", message=message, param=err.get("param"),
                         error={"type": err.get("type") or "server_error", "code": err.get("code") or "server_error",
                                "message": message, "param": err.get("param")})]


def _bare_part(part: dict[str, Any]) -> dict[str, Any]:
    return {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if part["type"] == "output_text" \
        else {"type": "refusal", "refusal": ""}
