"""Responses input items (or a stored Response's output items) as chat messages: pure, no I/O.

``{"role": ..., "content": ...}`` items -> messages (``developer`` -> ``system``; parts
``input_text``/``output_text`` -> text, ``input_image`` -> ``image_url``); ``function_call`` items
-> assistant ``tool_calls`` (consecutive ones merge); ``function_call_output`` items -> ``tool``
messages; ``reasoning`` items are dropped. Anything else is a 400 naming the item.
"""

from __future__ import annotations

from typing import Any

from .._chat import image_part, tool_call
from .schema import (
    _FunctionCallItem,
    _FunctionCallOutputItem,
    _MessageItem,
    bad,
    validate,
)

__all__ = ["items_to_messages"]

_ROLE = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text")


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
            raise bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type")
        if kind is None and "role" not in item:
            raise bad(f"Missing required parameter: '{where}.type' (or '{where}.role' for a message).",
                      f"{where}.type", "missing_required_parameter")
        if kind in (None, "message"):
            msg = validate(_MessageItem, item, where)
            out.append(_message(msg.role, msg.content, where))
        elif kind == "function_call":
            fc = validate(_FunctionCallItem, item, where)
            call = tool_call(fc.call_id, fc.name, fc.arguments)
            last = out[-1] if out else None
            if last is not None and last.get("role") == "assistant":
                if not last.get("tool_calls"):
                    last["tool_calls"] = []
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            fo = validate(_FunctionCallOutputItem, item, where)
            out.append({"role": "tool", "tool_call_id": fo.call_id,
                        "content": _tool_output(fo.output, f"{where}.output")})
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise bad(f"'{where}': item references are not supported by tierwise; send the item itself or use "
                      "previous_response_id", f"{where}.type", "unsupported_value")
        else:
            raise bad(f"'{where}': input item type '{kind}' is not supported by tierwise (supported: message, "
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
                raise bad(f"Missing required parameter: '{p}.text'.", f"{p}.text", "missing_required_parameter")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            if role != "user":
                raise bad(f"'{p}': images are only allowed in user messages", f"{p}.type", "invalid_value")
            if part.get("file_id") is not None and part.get("image_url") is None:
                raise bad(f"'{p}.file_id': file ids are not supported by tierwise (no Files API); send "
                          "image_url (an https:// or data: URL)", f"{p}.file_id", "unsupported_value")
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad(f"Missing required parameter: '{p}.image_url'.", f"{p}.image_url",
                          "missing_required_parameter")
            parts.append(image_part(url, part.get("detail")))
        elif kind is None:
            raise bad(f"Missing required parameter: '{p}.type'.", f"{p}.type", "missing_required_parameter")
        else:
            raise bad(f"'{p}': content type '{kind}' is not supported by tierwise (supported: input_text, "
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
            raise bad(f"'{where}[{j}]': only text parts are supported in a function_call_output by tierwise",
                      f"{where}[{j}].type", "unsupported_value")
    return "".join(texts)
