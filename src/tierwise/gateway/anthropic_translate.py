"""Anthropic Messages <-> OpenAI chat completions, as pure functions (no I/O; see ``anthropic.py``).

* :func:`to_chat`: an Anthropic ``/v1/messages`` request body, validated (Anthropic-style 400s that
  name the field), as the chat-completions body the engine routes: ``system`` -> a system message;
  content blocks ``text`` -> text, ``image`` -> an ``image_url`` part (a ``data:`` URL for base64,
  so the engine asks for ``vision``), ``tool_use`` -> assistant ``tool_calls``, ``tool_result`` ->
  ``tool`` messages; ``tools`` -> function tools; ``tool_choice`` auto/any/tool/none ->
  auto/required/{function}/none; ``stop_sequences`` -> ``stop``; ``metadata.user_id`` -> ``user``;
  ``stream`` -> ``stream`` + ``stream_options.include_usage``; ``output_config.format`` (a JSON
  schema) -> ``response_format`` ``json_schema``; ``system`` turns inside ``messages`` -> system
  messages in place. Dropped: ``top_k``, ``thinking``, ``output_config.effort``, ``cache_control``
  and thinking blocks of earlier assistant turns (no OpenAI equivalent).
* :func:`to_message`: a ``chat.completion`` as an Anthropic ``message`` (text block, then one
  ``tool_use`` block per tool call; ``stop_reason`` from ``finish_reason``; usage in Anthropic's
  names).
* :class:`StreamTranslator`: ``chat.completion.chunk`` objects in, Anthropic stream events out
  (``message_start``, ``content_block_start``/``_delta``/``_stop`` per block, ``message_delta``,
  ``message_stop``), one block open at a time as Anthropic sends them, however the tool-call deltas
  of several calls interleave.
* :func:`error_body` / :func:`error_type`: Anthropic's error object and its ``type`` per status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import RequestError

__all__ = ["to_chat", "parse_json", "to_message", "stop_reason", "anthropic_usage", "StreamTranslator",
           "error_body", "error_type", "stream_error_event", "Event"]

Event = tuple[str, dict[str, Any]]  # (event type, data); the data's "type" is the event type

MAX_MODEL_NAME = 256
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# -- errors ----------------------------------------------------------------------------------------

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (other 4xx: invalid_request_error; 5xx: api_error)."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` (+ ``request_id`` when known), Anthropic's shape."""
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def _bad(path: str, message: str) -> RequestError:
    return RequestError(f"{path}: {message}" if path else message, status=400, param=path or None)


# -- the request -------------------------------------------------------------------------------------


class _Open(BaseModel):
    """Fields tierwise reads, strictly; others (``cache_control``, ``citations`` ...) are tolerated."""

    model_config = ConfigDict(extra="allow", strict=True)


class _Text(_Open):
    type: Literal["text"]
    text: str


class _Base64Source(_Open):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class _UrlSource(_Open):
    type: Literal["url"]
    url: str = Field(min_length=1)


class _Image(_Open):
    type: Literal["image"]
    source: dict[str, Any]


class _ToolUse(_Open):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class _ToolResult(_Open):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class _Thinking(_Open):
    type: Literal["thinking"]
    thinking: str


class _RedactedThinking(_Open):
    type: Literal["redacted_thinking"]
    data: str


_BLOCKS: dict[str, type[_Open]] = {"text": _Text, "image": _Image, "tool_use": _ToolUse, "tool_result": _ToolResult,
                                   "thinking": _Thinking, "redacted_thinking": _RedactedThinking}
_SOURCES: dict[str, type[_Open]] = {"base64": _Base64Source, "url": _UrlSource}
# which blocks each role may send (Anthropic's own rule: tool results come from the user, tool use
# and thinking from the assistant)
_ALLOWED = {"user": ("text", "image", "tool_result"), "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
            "system": ("text",)}


class _Message(_Open):
    role: Literal["user", "assistant", "system"]  # system turns: newer SDKs send them inside messages
    content: Any  # a string or a list of blocks, checked block by block (errors name the block)


class _Tool(_Open):
    type: str | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class _ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Metadata(_Open):
    user_id: str | None = None


class _Format(_Open):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class _OutputConfig(_Open):
    format: _Format | None = None
    effort: str | None = None


class _Request(_Open):
    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME)
    max_tokens: int = Field(ge=1)
    messages: list[_Message] = Field(min_length=1)
    system: Any = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    metadata: _Metadata | None = None
    output_config: _OutputConfig | None = None


def _loc(prefix: str, loc: Iterable[Any]) -> str:
    return ".".join([p for p in [prefix] if p] + [str(p) for p in loc])


def _check(model: type[BaseModel], value: Any, path: str) -> Any:
    """Validate ``value``; the first problem becomes ``<path>.<field>: <message>`` (Anthropic's style)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _loc(path, err.get("loc", ()))
        if err.get("type") == "model_type" and where == path and not path:
            raise RequestError("request body must be a JSON object", status=400, code="invalid_json") from None
        raise _bad(where, str(err.get("msg"))) from None


def parse_json(raw: bytes | str) -> Any:
    """The request body as JSON, or an Anthropic-style 400."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", status=400, code="invalid_json") from None


def _block(value: Any, path: str, role: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "Input should be a content block object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise _bad(f"{path}.type", "Field required" if "type" not in value else "Input should be a valid string")
    model = _BLOCKS.get(kind)
    if model is None:
        raise _bad(f"{path}.type", f"unsupported content block type '{kind[:60]}' (this gateway takes: "
                                   f"{', '.join(_BLOCKS)})")
    if kind not in _ALLOWED[role]:
        raise _bad(path, f"'{kind}' blocks are not allowed in {role} turns")
    _check(model, value, path)
    if kind == "image":
        _source(value["source"], f"{path}.source")
    if kind == "tool_result" and isinstance(value.get("content"), list):
        for k, inner in enumerate(value["content"]):
            ipath = f"{path}.content.{k}"
            if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                raise _bad(ipath, "a tool_result's content blocks must be 'text' or 'image'")
            _block(inner, ipath, "user")
    return value


def _source(src: dict[str, Any], path: str) -> None:
    kind = src.get("type")
    model = _SOURCES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise _bad(f"{path}.type", "image sources must be 'base64' or 'url'")
    _check(model, src, path)


def _content(value: Any, path: str, role: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _bad(path, "Input should be a valid string or a list of content blocks")
    if not value:
        raise _bad(path, "a message needs at least one content block")
    return [_block(b, f"{path}.{j}", role) for j, b in enumerate(value)]


def _system(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _bad("system", "Input should be a valid string or a list of text blocks")
    texts = []
    for j, b in enumerate(value):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise _bad(f"system.{j}", "system blocks must be 'text' blocks")
        texts.append(_check(_Text, b, f"system.{j}").text)
    return "\n\n".join(texts)


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    src = block["source"]
    url = src["url"] if src["type"] == "url" else f"data:{src['media_type']};base64,{src['data']}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``tool_result`` block as a ``tool`` message, plus the image parts it carried (OpenAI's tool
    messages take text only; the images follow in a user message)."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for inner in content:
            if inner["type"] == "text":
                texts.append(inner["text"])
            else:
                images.append(_image_part(inner))
        text = "\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _user_turn(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_msgs: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for b in content:
        if b["type"] == "tool_result":
            msg, imgs = _tool_message(b)
            tool_msgs.append(msg)
            images += imgs
        elif b["type"] == "text":
            parts.append({"type": "text", "text": b["text"]})
        else:  # image
            parts.append(_image_part(b))
    parts = images + parts
    out = tool_msgs  # tool results must follow the assistant's tool calls directly
    if parts:
        single_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if single_text else parts})
    return out


def _assistant_turn(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts = [b["text"] for b in content if b["type"] == "text"]
    calls = [{"id": b["id"], "type": "function",
              "function": {"name": b["name"], "arguments": json.dumps(b["input"], ensure_ascii=False)}}
             for b in content if b["type"] == "tool_use"]
    msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool(t: _Tool, i: int) -> dict[str, Any]:
    if t.type not in (None, "custom"):
        raise _bad(f"tools.{i}.type", f"tool type '{t.type[:60]}' (an Anthropic server tool) is not supported "
                                      "here; declare client tools with name, description and input_schema")
    if t.input_schema is None:
        raise _bad(f"tools.{i}.input_schema", "Field required")
    fn: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        fn["description"] = t.description
    fn["parameters"] = t.input_schema
    return {"type": "function", "function": fn}


def to_chat(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request as the chat-completions body the engine routes (see module doc).

    Raises :class:`RequestError` (400, ``param`` = the field path) on the first problem."""
    req = _check(_Request, body, "")
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        content = _content(m.content, f"messages.{i}.content", m.role)
        if m.role == "user":
            messages += _user_turn(content)
        elif m.role == "system":
            text = content if isinstance(content, str) else "\n\n".join(b["text"] for b in content)
            messages.append({"role": "system", "content": text})
        else:
            messages.append(_assistant_turn(content))
    chat: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]  # as the client sent it (validated above)
    if req.stop_sequences:
        chat["stop"] = list(req.stop_sequences)
    if req.metadata is not None and req.metadata.user_id:
        chat["user"] = req.metadata.user_id
    if req.tools:
        chat["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
        tc = req.tool_choice
        if tc is not None:
            if tc.type == "tool":
                if not tc.name:
                    raise _bad("tool_choice.name", "Field required")
                chat["tool_choice"] = {"type": "function", "function": {"name": tc.name}}
            else:
                chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[tc.type]
            if tc.disable_parallel_tool_use and tc.type != "none":
                chat["parallel_tool_calls"] = False
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None:  # structured output: the engine then routes only among json_schema models
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": fmt.schema_}}
    if req.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# -- the answer --------------------------------------------------------------------------------------


def stop_reason(finish: Any, *, matched: Any = None, stop_sequences: Iterable[str] = (),
                tool_use: bool = False) -> tuple[str, str | None]:
    """(``stop_reason``, ``stop_sequence``) for an OpenAI ``finish_reason``.

    ``matched`` is the stop string some backends (vLLM) report as the choice's ``stop_reason``; a
    plain ``stop`` with tool calls in the answer is ``tool_use`` (some servers say ``stop`` then)."""
    if finish in ("tool_calls", "function_call") or (tool_use and finish in (None, "stop")):
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and matched in set(stop_sequences):
        return "stop_sequence", matched
    return "end_turn", None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def anthropic_usage(usage: Any, tokens_in: int = 0, tokens_out: int = 0) -> dict[str, int]:
    """OpenAI ``usage`` in Anthropic's names (``tokens_in``/``tokens_out`` when it has none).

    OpenAI's ``prompt_tokens`` include cached ones; Anthropic counts them apart
    (``cache_read_input_tokens``), so the input total stays the same."""
    u = usage if isinstance(usage, dict) else {}
    t_in = _int(u.get("prompt_tokens"))
    t_out = _int(u.get("completion_tokens"))
    t_in = tokens_in if t_in is None else t_in
    t_out = tokens_out if t_out is None else t_out
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
    out = {"input_tokens": max(0, t_in - (cached or 0)), "output_tokens": t_out}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` string as a ``tool_use`` ``input`` object. Arguments that are not
    a JSON object are kept, as ``{"_raw_arguments": <string>}``, rather than dropped."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def to_message(completion: dict[str, Any], *, msg_id: str, model: str, stop_sequences: Iterable[str] = (),
               tokens_in: int = 0, tokens_out: int = 0) -> dict[str, Any]:
    """A ``chat.completion`` (its first choice) as an Anthropic ``message``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    if not calls and isinstance(msg.get("function_call"), dict):  # the legacy single-function shape
        calls = [{"id": f"toolu_{msg_id}_0", "function": msg["function_call"]}]
    for k, c in enumerate(calls):
        fn = c.get("function") or {}
        content.append({"type": "tool_use", "id": c.get("id") or f"toolu_{msg_id}_{k}",
                        "name": fn.get("name") or "", "input": tool_input(fn.get("arguments"))})
    if not content:
        content.append({"type": "text", "text": ""})
    reason, seq = stop_reason(choice.get("finish_reason"), matched=choice.get("stop_reason"),
                              stop_sequences=stop_sequences, tool_use=bool(calls))
    if refusal and not text and reason == "end_turn":
        reason = "refusal"
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": seq,
            "usage": anthropic_usage(completion.get("usage"), tokens_in, tokens_out)}


# -- the stream --------------------------------------------------------------------------------------


def stream_error_event(openai_error: dict[str, Any]) -> Event:
    """The engine's mid-stream OpenAI error object as Anthropic's ``error`` event."""
    err = openai_error.get("error") if isinstance(openai_error.get("error"), dict) else {}
    kind = "overloaded_error" if err.get("code") == "overloaded" else "api_error"
    return "error", error_body(kind, str(err.get("message") or "the model failed mid-stream"))


@dataclass
class _Call:
    """One OpenAI tool call as it streams in."""

    id: str = ""
    name: str = ""
    args: str = ""
    index: int | None = None  # its Anthropic block, once opened
    closed: bool = False


@dataclass
class _Block:
    source: Any  # "text" or ("tool", openai index)
    index: int


@dataclass
class StreamTranslator:
    """OpenAI chunks -> Anthropic events for one streamed message (pure: call, collect the events).

    ``start()`` once, ``feed(chunk)`` per chunk, ``finish()`` at the end (closes what is open,
    ``message_delta`` with the stop reason and usage, ``message_stop``). Anthropic sends one block at
    a time; so does this: the block being streamed stays open while its source is sending, and
    another source (text, or another tool call's arguments) waits in order until the open block may
    end (text always may; a tool call once its arguments are complete JSON), then starts with what
    it buffered. A tool block starts at its first argument fragment, when its name is known.
    """

    msg_id: str
    model: str
    input_tokens: int = 0
    stop_sequences: tuple[str, ...] = ()
    _next_index: int = 0
    _current: _Block | None = None
    _pending: dict[Any, list[str]] = field(default_factory=dict)
    _calls: dict[int, _Call] = field(default_factory=dict)
    _finish: Any = None
    _matched: Any = None
    _usage: dict[str, Any] | None = None
    _refused: bool = False
    _text_seen: bool = False

    def start(self) -> list[Event]:
        return [("message_start", {"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": int(self.input_tokens), "output_tokens": 0}}})]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per message
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text_seen = True
                self._route("text", text, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                self._route("text", refusal, out)
            calls = delta.get("tool_calls")
            if not calls and isinstance(delta.get("function_call"), dict):
                calls = [{"index": 0, "function": delta["function_call"]}]
            for tc in calls or ():
                if isinstance(tc, dict):
                    self._tool_delta(tc, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")
        return out

    def finish(self, *, input_tokens: int | None = None, output_tokens: int | None = None) -> list[Event]:
        """Close everything; usage from the stream's usage chunk, else the given counts."""
        out: list[Event] = []
        for i in sorted(self._calls):  # calls that never sent arguments still get their block
            call = self._calls[i]
            if call.index is None and ("tool", i) not in self._pending:
                self._pending[("tool", i)] = []
        self._close(out)
        while self._pending:
            self._promote(out)
            self._close(out)
        if self._next_index == 0:  # an empty answer is still one (empty) text block
            self._open("text", out)
            self._close(out)
        reason, seq = stop_reason(self._finish, matched=self._matched, stop_sequences=self.stop_sequences,
                                  tool_use=bool(self._calls))
        if self._refused and not self._text_seen and reason == "end_turn":
            reason = "refusal"
        usage = anthropic_usage(self._usage, input_tokens if input_tokens is not None else self.input_tokens,
                                output_tokens or 0)
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": reason, "stop_sequence": seq},
                                      "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    # -- blocks ------------------------------------------------------------------------------------

    def _tool_delta(self, tc: dict[str, Any], out: list[Event]) -> None:
        i = tc.get("index")
        if not isinstance(i, int):  # servers that leave out the index: a new id is a new call
            known = [k for k, c in self._calls.items() if tc.get("id") and c.id == tc.get("id")]
            i = known[0] if known else (max(self._calls) + 1 if tc.get("id") and self._calls else
                                        (max(self._calls) if self._calls else 0))
        call = self._calls.setdefault(i, _Call())
        if isinstance(tc.get("id"), str) and not call.id:
            call.id = tc["id"]
        fn = tc.get("function") or {}
        if isinstance(fn.get("name"), str):
            call.name += fn["name"]
        frag = fn.get("arguments")
        if isinstance(frag, dict):  # a server that sends the arguments as an object
            frag = json.dumps(frag, ensure_ascii=False)
        if isinstance(frag, str) and frag:
            if call.closed:
                return  # a finished call's block is over; only whitespace can follow complete JSON
            self._route(("tool", i), frag, out)

    def _route(self, source: Any, payload: str, out: list[Event]) -> None:
        cur = self._current
        if cur is not None and cur.source == source:
            self._delta(payload, out)
        else:
            self._pending.setdefault(source, []).append(payload)
        self._advance(out)

    def _advance(self, out: list[Event]) -> None:
        while self._pending and (self._current is None or self._may_end(self._current)):
            self._close(out)
            self._promote(out)

    def _may_end(self, block: _Block) -> bool:
        if block.source == "text":
            return True
        args = self._calls[block.source[1]].args
        try:
            json.loads(args)
        except ValueError:
            return False
        return True

    def _promote(self, out: list[Event]) -> None:
        source = next(iter(self._pending))
        payloads = self._pending.pop(source)
        self._open(source, out)
        if payloads:
            self._delta("".join(payloads), out)

    def _open(self, source: Any, out: list[Event]) -> None:
        index = self._next_index
        self._next_index += 1
        self._current = _Block(source, index)
        if source == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
        else:
            k = source[1]
            call = self._calls[k]
            call.index = index
            block = {"type": "tool_use", "id": call.id or f"toolu_{self.msg_id}_{k}", "name": call.name, "input": {}}
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))

    def _delta(self, payload: str, out: list[Event]) -> None:
        cur = self._current
        if cur.source == "text":
            delta = {"type": "text_delta", "text": payload}
        else:
            self._calls[cur.source[1]].args += payload
            delta = {"type": "input_json_delta", "partial_json": payload}
        out.append(("content_block_delta", {"type": "content_block_delta", "index": cur.index, "delta": delta}))

    def _close(self, out: list[Event]) -> None:
        cur = self._current
        if cur is None:
            return
        if cur.source != "text":
            self._calls[cur.source[1]].closed = True
        out.append(("content_block_stop", {"type": "content_block_stop", "index": cur.index}))
        self._current = None
