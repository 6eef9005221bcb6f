"""A Responses request, checked: pydantic models of the fields tierwise reads (strictly, no
coercion), and the first problem as OpenAI's Responses API words it: a 400 with the field path as
``param`` (``input[2].content[0].image_url``) and a ``code`` (``missing_required_parameter``,
``invalid_type``, ``invalid_value``, ``unsupported_*``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ....engine.request import MAX_MODEL_NAME
from ....errors import RequestError

__all__ = ["bad", "validate"]


def bad(message: str, param: str | None, code: str = "invalid_value", status: int = 400) -> RequestError:
    """A Responses-style error (400 unless ``status``) naming the field as ``param``."""
    return RequestError(message, status=status, param=param, code=code)


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
    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME)
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
        return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if param == "input" and kind in ("string_type", "list_type"):
        return bad("Invalid type for 'input': expected a string or an array of input items.", param,
                   "invalid_type")
    if kind.endswith("_type") or kind in ("model_type", "dict_type"):
        return bad(f"Invalid type for '{param}': {err.get('msg')}.", param or None, "invalid_type")
    return bad(f"Invalid value for '{param}': {err.get('msg')}.", param or None, "invalid_value")


def validate(model: type[BaseModel], obj: Any, prefix: str) -> Any:
    """``obj`` as ``model``, or the first problem as a 400 (field paths under ``prefix``)."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _validation_error(exc, prefix) from None
