"""An Anthropic Messages request, checked: pydantic models of the fields tierwise reads, and the
first problem as a 400 in Anthropic's style, ``<path>.<field>: <message>`` with ``param`` = the path.

Content blocks are checked one by one (so the error names the block): the types this gateway takes,
which role may send which (tool results come from the user; tool use and thinking from the
assistant), image sources (``base64`` or ``url``), and a ``tool_result``'s inner text/image blocks.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ....engine.body import load_json
from ....engine.request import MAX_MODEL_NAME
from ....errors import RequestError

__all__ = ["bad", "check", "parse_json", "validate_request", "content_blocks", "system_text"]


def bad(path: str, message: str) -> RequestError:
    """A 400 naming the field: ``<path>: <message>``, ``param`` = the path."""
    return RequestError(f"{path}: {message}" if path else message, status=400, param=path or None)


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


def check(model: type[BaseModel], value: Any, path: str) -> Any:
    """Validate ``value``; the first problem becomes ``<path>.<field>: <message>`` (Anthropic's style)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _loc(path, err.get("loc", ()))
        if err.get("type") == "model_type" and where == path and not path:
            raise RequestError("request body must be a JSON object", status=400, code="invalid_json") from None
        raise bad(where, str(err.get("msg"))) from None


def parse_json(raw: bytes | str) -> Any:
    """The request body as JSON, or an Anthropic-style 400."""
    try:
        return load_json(raw)
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", status=400, code="invalid_json") from None


def validate_request(body: Any) -> _Request:
    """The request's top-level fields, checked (messages' content: :func:`content_blocks`)."""
    return check(_Request, body, "")


def _block(value: Any, path: str, role: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(path, "Input should be a content block object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise bad(f"{path}.type", "Field required" if "type" not in value else "Input should be a valid string")
    model = _BLOCKS.get(kind)
    if model is None:
        raise bad(f"{path}.type", f"unsupported content block type '{kind[:60]}' (this gateway takes: "
                                  f"{', '.join(_BLOCKS)})")
    if kind not in _ALLOWED[role]:
        raise bad(path, f"'{kind}' blocks are not allowed in {role} turns")
    check(model, value, path)
    if kind == "image":
        _source(value["source"], f"{path}.source")
    if kind == "tool_result" and isinstance(value.get("content"), list):
        for k, inner in enumerate(value["content"]):
            ipath = f"{path}.content.{k}"
            if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                raise bad(ipath, "a tool_result's content blocks must be 'text' or 'image'")
            _block(inner, ipath, "user")
    return value


def _source(src: dict[str, Any], path: str) -> None:
    kind = src.get("type")
    model = _SOURCES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise bad(f"{path}.type", "image sources must be 'base64' or 'url'")
    check(model, src, path)


def content_blocks(value: Any, path: str, role: str) -> str | list[dict[str, Any]]:
    """A message's ``content`` (a string, or a list of blocks ``role`` may send), checked."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise bad(path, "Input should be a valid string or a list of content blocks")
    if not value:
        raise bad(path, "a message needs at least one content block")
    return [_block(b, f"{path}.{j}", role) for j, b in enumerate(value)]


def system_text(value: Any) -> str | None:
    """The top-level ``system`` (a string or text blocks, joined by a blank line), checked."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise bad("system", "Input should be a valid string or a list of text blocks")
    texts = []
    for j, b in enumerate(value):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise bad(f"system.{j}", "system blocks must be 'text' blocks")
        texts.append(check(_Text, b, f"system.{j}").text)
    return "\n\n".join(texts)
