"""An Anthropic Messages request as the chat-completions body the engine routes: pure, no I/O.

``system`` -> a system message; content blocks ``text`` -> text, ``image`` -> an ``image_url`` part
(a ``data:`` URL for base64, so the engine asks for ``vision``), ``tool_use`` -> assistant
``tool_calls``, ``tool_result`` -> ``tool`` messages; ``tools`` -> function tools; ``tool_choice``
auto/any/tool/none -> auto/required/{function}/none; ``stop_sequences`` -> ``stop``;
``metadata.user_id`` -> ``user``; ``stream`` -> ``stream`` + ``stream_options.include_usage``;
``output_config.format`` (a JSON schema) -> ``response_format`` ``json_schema``; ``system`` turns
inside ``messages`` -> system messages in place; a last assistant turn of text (a prefill) ->
``continue_final_message`` (vLLM's field: models with the ``prefill`` capability continue it). Dropped: ``top_k``, ``thinking``,
``output_config.effort``, ``cache_control`` and thinking blocks of earlier assistant turns (no
OpenAI equivalent).
"""

from __future__ import annotations

import json
from typing import Any

from .._chat import forced_tool, function_tool, image_part, orphan_tool_result, tool_call
from .schema import _Tool, bad, content_blocks, system_text, validate_request

__all__ = ["to_chat"]


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    src = block["source"]
    return image_part(src["url"] if src["type"] == "url" else f"data:{src['media_type']};base64,{src['data']}")


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
    calls = [tool_call(b["id"], b["name"], json.dumps(b["input"], ensure_ascii=False))
             for b in content if b["type"] == "tool_use"]
    msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool(t: _Tool, i: int) -> dict[str, Any]:
    if t.type not in (None, "custom"):
        raise bad(f"tools.{i}.type", f"tool type '{t.type[:60]}' (an Anthropic server tool) is not supported "
                                     "here; declare client tools with name, description and input_schema")
    if t.input_schema is None:
        raise bad(f"tools.{i}.input_schema", "Field required")
    return function_tool(t.name, description=t.description, parameters=t.input_schema)


def to_chat(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request as the chat-completions body the engine routes (see module doc).

    Raises :class:`RequestError` (400, ``param`` = the field path) on the first problem."""
    req = validate_request(body)
    messages: list[dict[str, Any]] = []
    system = system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        content = content_blocks(m.content, f"messages.{i}.content", m.role)
        if m.role == "user":
            messages += _user_turn(content)
        elif m.role == "system":
            text = content if isinstance(content, str) else "\n\n".join(b["text"] for b in content)
            messages.append({"role": "system", "content": text})
        else:
            messages.append(_assistant_turn(content))
    orphan = orphan_tool_result(messages)
    if orphan is not None:  # Anthropic's own words
        raise bad("messages", f"unexpected `tool_use_id` found in `tool_result` blocks: {orphan}. Each `tool_result` "
                  "block must have a corresponding `tool_use` block in the previous message.")
    chat: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and not last.get("tool_calls") and last.get("content"):
        chat["continue_final_message"] = True  # a prefill: the answer continues it (models with `prefill`)
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
                    raise bad("tool_choice.name", "Field required")
                chat["tool_choice"] = forced_tool(tc.name)
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
