"""A chat-completions request as the engine sees it: the client's body, checked, plus what routing reads.

The body is kept exactly as the client sent it (every field, known or not) so it can be forwarded
unchanged; validation only checks the fields the engine itself relies on, with OpenAI-style errors
that name the field. Derived once here: the conversation text the router reads (tool calls and
tool results included), the capabilities the request needs, and the answer budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends.base import message_text
from ..errors import RequestError
from .body import load_json
from .capabilities import required

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


# bounds on what one request may carry (the body size limit bounds the rest)
MAX_MESSAGES = 4096
MAX_MODEL_NAME = 256


class _CalledFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arguments: str | dict[str, Any] | None = None  # OpenAI sends a JSON string; an object is read as one


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str | None = None
    type: str | None = None
    function: _CalledFunction


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class _Tool(BaseModel):
    """A tool definition: function tools are checked; other types (a provider's own) pass to the backend."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str = "function"
    function: _ToolFunction | None = None


class _NamedFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str


class _ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str = "function"
    function: _NamedFunction | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool | None = False


class _Schema(BaseModel):
    """The fields the engine reads, strictly (no coercion); everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME)
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=128)
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _ToolChoice | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


@dataclass
class ChatRequest:
    """One parsed request. ``body`` is the client's, untouched; the rest is read from it."""

    body: dict[str, Any]
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None  # the client's answer budget, if it gave one
    needs: frozenset[str]

    @classmethod
    def parse(cls, raw: bytes | str | dict[str, Any]) -> "ChatRequest":
        if not isinstance(raw, (bytes, bytearray, str)):
            body = raw
        else:
            too_many(raw)
            try:
                body = load_json(raw)
            except ValueError as exc:
                raise RequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object", code="invalid_json")
        msgs = body.get("messages")
        if isinstance(msgs, list) and len(msgs) > MAX_MESSAGES:
            raise RequestError(f"'messages' has {len(msgs)} entries; the limit is {MAX_MESSAGES}",
                               status=413, param="messages", code="too_many_messages")
        try:
            req = _Schema.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        return cls(
            body=body,
            model=req.model,
            messages=body["messages"],
            stream=bool(req.stream),
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            max_tokens=req.max_completion_tokens or req.max_tokens,
            needs=required(body),
        )

    def text(self) -> str:
        """The conversation as the router reads it: last user turn first, tool traffic included."""
        from ..router import conversation_text

        return conversation_text(routing_messages(self.messages))

    @property
    def prompt_tools(self) -> list[dict[str, Any]] | None:
        """The tool definitions the model's prompt carries (counted against its context window)."""
        tools = self.body.get("tools")
        return tools if tools and self.body.get("tool_choice") != "none" else None

    def forward(self) -> dict[str, Any]:
        """The body to send a backend: the client's, without ``model`` (the backend sets its own)."""
        return {k: v for k, v in self.body.items() if k != "model"}


def too_many(raw: bytes | bytearray | str) -> None:
    """Refuse a body with far too many messages before parsing it: parsing 100k messages holds the
    event loop (and the GIL) for a third of a second. Every message has a ``"role"`` key, and an
    escaped quote inside a string cannot form that token, so the count is an upper bound."""
    token = b'"role"' if isinstance(raw, (bytes, bytearray)) else '"role"'
    n = raw.count(token)  # type: ignore[arg-type]
    if n > MAX_MESSAGES:
        raise RequestError(f"the request has about {n} messages; the limit is {MAX_MESSAGES}", status=413,
                           param="messages", code="too_many_messages")


def routing_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each message as role + text: content parts joined, tool calls and results written out."""
    out = []
    for m in messages:
        text = message_text(m.get("content"))
        calls = m.get("tool_calls")
        if calls:
            names = " ".join(
                f"{(c.get('function') or {}).get('name', '')}({(c.get('function') or {}).get('arguments', '')})"
                for c in calls if isinstance(c, dict))
            text = f"{text}\n{names}" if text else names
        out.append({"role": m.get("role", "user"), "content": text})
    return out


def _union_member(label: str) -> bool:
    """Whether a ``loc`` entry names a union member (a type) rather than a field or an index."""
    return label in ("str", "int", "float", "bool", "none") or label.startswith(("_", "literal[", "function-")) or "[" in label


def validation_error(exc: ValidationError) -> RequestError:
    """The first problem, OpenAI-style: 422 with the field path as ``param``. Of a union's failed members
    the one that got furthest is reported (an object given for ``tool_choice`` is told what is wrong inside
    it, not that it is not one of the strings)."""
    errors = exc.errors()
    err = errors[max(range(len(errors)), key=lambda i: (len(errors[i].get("loc", ())), -i))]
    if err.get("type") == "json_invalid":
        return RequestError(f"request body is not valid JSON: {err.get('msg')}", code="invalid_json")
    path = [str(p) for p in err.get("loc", ()) if p != "body"]
    # union members show up in loc ("messages.0.content.str", "tool_choice._ToolChoice"); keep the field path only
    field_path = ".".join(p for p in path if not _union_member(p))
    if err.get("type") == "model_type" and not field_path:
        return RequestError("request body must be a JSON object", code="invalid_json")
    msg = f"missing required field '{field_path}'" if err.get("type") == "missing" else f"'{field_path}': {err.get('msg')}"
    return RequestError(msg, status=422, param=field_path or None, code="invalid_value")
