"""Tool calls in the Hermes format (what the Qwen2.5 chat templates teach), read back as OpenAI's.

The model writes ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`` blocks;
:func:`parse_tool_calls` turns them into OpenAI ``tool_calls`` entries (``arguments`` as a JSON
string), with the text outside the blocks as the message content. It is forgiving where a small
model slips (a missing closing tag at the end, trailing characters after the JSON object,
``arguments`` given as a JSON string) and strict where it matters: every block must hold an object
naming one of the request's tools, else the whole answer is plain content. An answer that is
nothing but such objects, without the tags (or in a json code fence), is read as calls too: the
0.5B Qwen writes them that way.

:class:`ToolCallSplitter` does the same for a stream: text is shown as content while it cannot be
the start of a tool call; from ``<tool_call>`` on (or while the whole answer so far could be an
untagged call) it is held and parsed when generation ends.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from ._llama_decode import partial_suffix

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
_SPACE = re.compile(r"\s+")
_BARE_STARTS = ('{"name":', '[{"name":', '```json{"name":', '```{"name":', '```json[{"name":')


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _call(obj: Any, names: list[str]) -> dict | None:
    """An OpenAI tool call from a parsed ``{"name": ..., "arguments": {...}}``; None when it is not one."""
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"id": new_call_id(), "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)}}


def _parse_block(body: str, names: list[str]) -> dict | None:
    start = body.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(body, start)
    except ValueError:
        return None
    return _call(obj, names)


def _parse_bare(text: str, names: list[str], cut: bool = False) -> list[dict] | None:
    """Calls written without the tags (small models do): the whole text must be call objects (``cut``: the
    answer ran out of tokens, so an unfinished last object after complete ones is dropped)."""
    s = text.strip()
    fenced = _FENCE.fullmatch(s)
    if fenced:
        s = fenced.group(1)
    decoder, pos, objs = json.JSONDecoder(), 0, []
    while True:
        while pos < len(s) and s[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(s):
            break
        try:
            obj, pos = decoder.raw_decode(s, pos)
        except ValueError:
            if cut and objs:
                break
            return None
        objs.extend(obj if isinstance(obj, list) else [obj])
    calls = [_call(o, names) for o in objs]
    return calls if calls and all(c is not None for c in calls) else None


def may_be_bare_call(text: str) -> bool:
    """Could ``text`` (the answer so far) still turn out to be a tool call written without tags?"""
    compact = _SPACE.sub("", text[:64])
    return any(p.startswith(compact) or compact.startswith(p) for p in _BARE_STARTS)


def parse_tool_calls(text: str, names: list[str], *, parallel: bool = True,
                     cut: bool = False) -> tuple[str | None, list[dict]] | None:
    """``(content or None, tool_calls)`` when ``text`` holds valid tool calls, else None. A last block
    left open and unparsable (the answer ran out of tokens inside it) is dropped when calls before it
    are complete; so is an unfinished last untagged call object when ``cut`` (max_tokens ended it)."""
    if OPEN not in text:
        bare = _parse_bare(text, names, cut)
        return None if bare is None else (None, bare if parallel else bare[:1])
    calls, outside, pos = [], [], 0
    while True:
        i = text.find(OPEN, pos)
        if i < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:i])
        j = text.find(CLOSE, i)
        call = _parse_block(text[i + len(OPEN): j if j >= 0 else len(text)], names)
        if call is None:
            if j < 0 and calls:  # the answer was cut inside a further call: keep the complete ones
                break
            return None
        calls.append(call)
        if j < 0:
            break
        pos = j + len(CLOSE)
    content = "".join(outside).strip() or None
    return content, calls if parallel else calls[:1]


class ToolCallSplitter:
    """Streamed text in, content that is safe to show out; a tool-call block is held until the end."""

    def __init__(self, names: list[str], *, parallel: bool = True):
        self.names, self.parallel = names, parallel
        self.text = ""
        self.shown = 0
        self.holding = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.holding:
            return ""
        i = self.text.find(OPEN, self.shown)
        if i >= 0:
            self.holding = True
            safe = i
        else:
            safe = len(self.text) - partial_suffix(self.text, [OPEN])
        head = self.text[:safe]
        if not head.strip() or (not self.shown and may_be_bare_call(head.lstrip())):
            return ""  # nothing shown yet and this may still be a tool call: hold
        out, self.shown = self.text[self.shown:safe], max(self.shown, safe)
        return out

    def finish(self, cut: bool = False) -> tuple[str, list[dict] | None]:
        """``(content still to show, tool_calls or None)``: the held text, parsed (``cut``: max_tokens ended it)."""
        rest = self.text[self.shown:]
        if self.holding or not self.shown:
            parsed = parse_tool_calls(rest, self.names, parallel=self.parallel, cut=cut)
            if parsed is not None:
                content, calls = parsed
                return content or "", calls
        return rest, None
