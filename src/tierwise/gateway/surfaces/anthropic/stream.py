"""``chat.completion.chunk`` objects in, Anthropic stream events out: pure, no I/O.

``message_start``, ``content_block_start``/``_delta``/``_stop`` per block, ``message_delta``,
``message_stop``, one block open at a time as Anthropic sends them, however the tool-call deltas of
several calls interleave; :func:`stream_error_event` for the engine's mid-stream failure. Events are
``(type, data)`` pairs (the data's ``type`` is the event type), framed by ``sse.named_event``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._chat import stream_choices
from .answer import anthropic_usage, stop_reason
from .errors import error_body

__all__ = ["Event", "StreamTranslator", "stream_error_event"]

Event = tuple[str, dict[str, Any]]  # (event type, data); the data's "type" is the event type


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
        for choice in stream_choices(chunk):  # Anthropic has one answer per message
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
