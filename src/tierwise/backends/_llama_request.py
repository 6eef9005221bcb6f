"""A chat-completions body, checked and read for the local llama.cpp backend.

``parse_request`` turns the client's body into a :class:`LocalRequest`: the conversation in the
shape the GGUF's Jinja chat template expects (``developer`` as ``system``, content parts joined,
tool-call arguments parsed from their JSON strings into objects, ``None`` content as ``""``), the
sampling settings, the tool mode and the response format. Anything this backend cannot honour is
refused up front with an OpenAI error body (:class:`UpstreamRejected`, HTTP 400), never dropped:
image/audio parts, ``n > 1``, audio output, legacy ``functions``, tools on a template without tool
support. Unknown fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import UpstreamRejected

_IMAGE_OR_AUDIO = frozenset({"image_url", "image", "input_image", "input_audio", "audio", "file", "input_file"})
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def reject(backend: str, message: str, *, code: str = "invalid_value", param: str | None = None) -> UpstreamRejected:
    """A 400 in OpenAI's error shape."""
    return UpstreamRejected(backend, 400, {"error": {"message": message, "type": "invalid_request_error",
                                                     "param": param, "code": code}})


@dataclass
class LocalRequest:
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None  # token id -> bias added to its logit (OpenAI's -100..100)
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: dict | None = None  # {"type": "json_object"} or {"type": "json_schema", "schema": ...}
    tools: list[dict] | None = None  # handed to the chat template (None when off)
    tool_mode: str = "off"  # off | auto | required | named
    tool_name: str | None = None  # the named tool (tool_mode "named")
    parallel_tool_calls: bool = True
    include_usage: bool = False
    prefill: str | None = None  # continue_final_message: the last assistant turn's text, continued
    prompt: str | None = None  # legacy completions: the raw prompt, no chat template (``_llama_text``)
    echo: bool = False  # legacy completions: the prompt is repeated before the answer

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools or ()]


def _number(body: dict, key: str, default: float, lo: float, hi: float, backend: str) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise reject(backend, f"'{key}' must be a number between {lo:g} and {hi:g}", param=key)
    return float(v)


def _int(body: dict, key: str, lo: int, backend: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise reject(backend, f"'{key}' must be an integer >= {lo}", param=key)
    return v


def _arguments(raw: Any) -> Any:
    """OpenAI sends tool-call arguments as a JSON string; chat templates expect the object."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return raw if raw is not None else {}


def content_text(content: Any, backend: str, *, strict: bool = True) -> str:
    """A message's text: a string, or its text parts joined; media parts refused (``strict``) or skipped."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        if strict:
            raise reject(backend, "message content must be a string or a list of content parts", param="messages")
        return str(content)
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, str):
            out.append(part)
        elif kind in ("text", "refusal") and isinstance(part.get(kind), str):
            out.append(part[kind])
        elif not strict:
            continue
        elif kind in _IMAGE_OR_AUDIO:
            raise reject(backend, f"this model accepts text only: content part of type '{kind}' is not supported",
                         code="unsupported_capability", param="messages")
        else:
            raise reject(backend, f"unsupported content part {kind!r}", param="messages")
    return "\n".join(out)


def template_messages(messages: Any, backend: str, *, strict: bool = True) -> list[dict]:
    """The conversation as chat templates expect it (see the module docstring)."""
    if not isinstance(messages, list) or not messages:
        raise reject(backend, "'messages' must be a non-empty list", param="messages")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise reject(backend, "each message must be an object", param="messages")
        role = _ROLES.get(m.get("role"))
        if role is None:
            if strict:
                raise reject(backend, f"unsupported message role {m.get('role')!r}", param="messages")
            role = "user"
        msg: dict[str, Any] = {"role": role, "content": content_text(m.get("content"), backend, strict=strict)}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = (c or {}).get("function") or {}
                calls.append({"id": c.get("id"), "type": "function",
                              "function": {"name": fn.get("name") or "", "arguments": _arguments(fn.get("arguments"))}})
            msg["tool_calls"] = calls
        if role == "tool" and m.get("tool_call_id") is not None:
            msg["tool_call_id"] = m["tool_call_id"]
        if isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    return out


def _tools(body: dict, backend: str, tools_supported: bool) -> tuple[list[dict] | None, str, str | None]:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if body.get("functions") or body.get("function_call"):
        raise reject(backend, "legacy 'functions'/'function_call' are not supported: use 'tools'", param="functions")
    if not tools:
        if choice not in (None, "none"):
            raise reject(backend, "'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
        return None, "off", None
    if not isinstance(tools, list):
        raise reject(backend, "'tools' must be a list", param="tools")
    names = []
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise reject(backend, "only function tools ({'type': 'function', 'function': {...}}) are supported",
                         param="tools")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise reject(backend, "every tool function needs a 'name'", param="tools")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise reject(backend, f"tool {fn['name']!r}: 'parameters' must be a JSON schema object", param="tools")
        names.append(fn["name"])
    if choice is None or choice == "auto":
        mode, name = "auto", None
    elif choice in ("none", "required"):
        mode, name = choice, None
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        mode, name = "named", choice["function"]["name"]
        if name not in names:
            raise reject(backend, f"tool_choice names {name!r}, which is not in 'tools'", param="tool_choice")
    else:
        raise reject(backend, "'tool_choice' must be 'none', 'auto', 'required' or "
                     "{'type': 'function', 'function': {'name': ...}}", param="tool_choice")
    if mode == "none":
        return None, "off", None
    if not tools_supported:
        raise reject(backend, "this model's chat template has no tool support", code="unsupported_capability",
                     param="tools")
    return [{"type": "function", "function": t["function"]} for t in tools], mode, name


def _response_format(body: dict, backend: str) -> dict | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise reject(backend, "response_format json_schema needs 'json_schema': {'name': ..., 'schema': ...}",
                         param="response_format")
        schema = spec.get("schema")
        if schema is None:
            return {"type": "json_object"}
        if not isinstance(schema, dict):
            raise reject(backend, "response_format json_schema.schema must be an object", param="response_format")
        return {"type": "json_schema", "schema": schema}
    raise reject(backend, "response_format.type must be 'text', 'json_object' or 'json_schema'",
                 param="response_format")


def _logit_bias(body: dict, backend: str) -> dict[int, float] | None:
    """``logit_bias`` as OpenAI takes it: token ids (as JSON object keys) to a bias in [-100, 100]."""
    raw = body.get("logit_bias")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise reject(backend, "'logit_bias' must be an object mapping token ids to numbers", param="logit_bias")
    out: dict[int, float] = {}
    for key, value in raw.items():
        if not (isinstance(key, str) and key.isdigit()) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not -100 <= value <= 100:
            raise reject(backend, f"'logit_bias' entry {key!r}: keys must be token ids and values numbers in "
                         "[-100, 100]", param="logit_bias")
        out[int(key)] = float(value)
    return out or None


def sampling(body: Any, backend: str) -> dict[str, Any]:
    """The generation settings every local request shares (chat and legacy completions), checked."""
    if not isinstance(body, dict):
        raise reject(backend, "the request body must be a JSON object")
    n = _int(body, "n", 1, backend)
    if n is not None and n > 1:
        raise reject(backend, "this model returns one choice per request (n > 1 is not supported)",
                     code="unsupported_capability", param="n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    elif stop is None:
        stop = []
    elif not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise reject(backend, "'stop' must be a string or a list of strings", param="stop")
    stream_options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
    return dict(
        max_tokens=_int(body, "max_completion_tokens", 1, backend) or _int(body, "max_tokens", 1, backend),
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0, backend),
        top_p=_number(body, "top_p", 0.95, 0.0, 1.0, backend),
        seed=_int(body, "seed", -(2**63), backend),
        stop=[s for s in stop if s],
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0, backend),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0, backend),
        logit_bias=_logit_bias(body, backend),
        include_usage=bool(stream_options.get("include_usage")),
    )


def _prefill(body: dict, messages: list[dict], backend: str) -> tuple[list[dict], str | None]:
    """``continue_final_message`` (vLLM's field; the Anthropic surface sets it for a prefilled last
    assistant turn): the answer continues that turn's text instead of opening a new turn."""
    flag = body.get("continue_final_message")
    if flag is None or flag is False:
        return messages, None
    if flag is not True:
        raise reject(backend, "'continue_final_message' must be a boolean", param="continue_final_message")
    last = messages[-1]
    if last["role"] != "assistant" or last.get("tool_calls") or not isinstance(last.get("content"), str):
        raise reject(backend, "'continue_final_message' needs the last message to be an assistant turn of text",
                     param="messages")
    return messages[:-1], last["content"]


def parse_request(body: Any, backend: str, *, tools_supported: bool) -> LocalRequest:
    settings = sampling(body, backend)
    modalities = body.get("modalities")
    if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
        raise reject(backend, "this model cannot produce audio", code="unsupported_capability", param="modalities")
    top_logprobs = _int(body, "top_logprobs", 0, backend) or 0
    if top_logprobs > 20:
        raise reject(backend, "'top_logprobs' must be at most 20", param="top_logprobs")
    tools, mode, name = _tools(body, backend, tools_supported)
    messages, prefill = _prefill(body, template_messages(body.get("messages"), backend), backend)
    response_format = _response_format(body, backend)
    if prefill is not None and (response_format or mode in ("required", "named")):
        raise reject(backend, "'continue_final_message' cannot be combined with a response_format or a forced tool "
                     "call (their grammar constrains the whole answer, prefill included)", param="continue_final_message")
    return LocalRequest(
        messages=messages,
        prefill=prefill,
        logprobs=bool(body.get("logprobs")) or top_logprobs > 0,
        top_logprobs=top_logprobs,
        response_format=response_format,
        tools=tools,
        tool_mode=mode,
        tool_name=name,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        **settings,
    )
