"""Chat-completions shapes both surfaces build and read: pure functions, no I/O.

Ids; the ``image_url`` part; an assistant tool call; a function tool and a forced tool choice;
the first choice of an answer, the index-0 choices of a stream chunk; the text of a content-part
list (what some backends answer with instead of a string).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

__all__ = ["new_id", "image_part", "tool_call", "function_tool", "forced_tool", "first_choice", "stream_choices",
           "parts_text", "orphan_tool_result"]


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 32 hex digits (128 bits from the OS's CSPRNG): ``msg_...``, ``resp_...``, ``fc_...``."""
    return f"{prefix}_{secrets.token_hex(16)}"


def image_part(url: str, detail: Any = None) -> dict[str, Any]:
    """A chat ``image_url`` content part (an ``https:`` or ``data:`` URL; the request then needs vision)."""
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of an assistant message's ``tool_calls`` (``arguments``: the JSON string)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def function_tool(name: str, *, description: str | None = None, parameters: dict[str, Any] | None = None,
                  strict: bool | None = None) -> dict[str, Any]:
    """A chat function tool; the fields that are ``None`` are left out."""
    fn: dict[str, Any] = {"name": name}
    for key, value in (("description", description), ("parameters", parameters), ("strict", strict)):
        if value is not None:
            fn[key] = value
    return {"type": "function", "function": fn}


def forced_tool(name: str) -> dict[str, Any]:
    """The chat ``tool_choice`` that makes the model call the function ``name``."""
    return {"type": "function", "function": {"name": name}}


def first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion``'s first choice (``{}`` when it has none): the one answer a surface returns."""
    choices = completion.get("choices") or [{}]
    return choices[0] if isinstance(choices[0], dict) else {}


def stream_choices(chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A ``chat.completion.chunk``'s choices with index 0 (both surfaces carry one answer)."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            yield choice


def parts_text(parts: list[Any]) -> str:
    """The text of a content-part list, joined (parts without a string ``text`` count as nothing)."""
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def orphan_tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The ``tool_call_id`` of the first ``tool`` message that answers no earlier assistant tool call, else
    None. OpenAI and Anthropic refuse such a conversation (a result for a call nobody made); passed on, a
    chat template renders it as a stray turn."""
    called: set[str] = set()
    for m in messages:
        if m.get("role") == "assistant":
            called.update(c.get("id") for c in m.get("tool_calls") or () if isinstance(c, dict))
        elif m.get("role") == "tool" and m.get("tool_call_id") not in called:
            return str(m.get("tool_call_id"))
    return None
