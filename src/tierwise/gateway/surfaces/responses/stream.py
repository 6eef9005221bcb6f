"""Chat ``chat.completion.chunk`` dicts in, the Responses event sequence out: pure, no I/O.

``response.created`` ... ``response.completed`` (or ``response.incomplete`` / ``response.failed``),
each event a dict with ``type`` and ``sequence_number``, framed by ``sse.named_event``.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

from .._chat import new_id, parts_text, stream_choices
from .answer import finish_status, response_object, response_usage, token_logprobs
from .request import ResponsesCall

__all__ = ["StreamTranslator"]


class StreamTranslator:
    """Chat ``chat.completion.chunk`` dicts in, Responses stream events out (pure; no I/O).

    ``start()`` -> ``response.created``, ``response.in_progress``; ``feed(chunk)`` -> the events that
    chunk causes (``response.output_item.added``, ``response.content_part.added``,
    ``response.output_text.delta``, ``response.refusal.delta``, ``response.function_call_arguments.delta``);
    ``finish()`` closes every open item (``*.done`` events) and ends with ``response.completed`` (or
    ``response.incomplete`` when the model hit ``max_output_tokens``); ``fail(error)`` ends with
    ``response.failed`` and an ``error`` event instead. ``response`` is the final Response object.
    """

    def __init__(self, call: ResponsesCall, *, response_id: str, model: str, created_at: float | None = None,
                 ids: Callable[[str], str] = new_id):
        self.call, self.response_id, self.model = call, response_id, model
        self.created_at = int(created_at if created_at is not None else time.time())
        self._ids = ids
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._open: set[int] = set()  # output indexes not closed yet
        self._msg: int | None = None  # the open message item's output index
        self._part: int | None = None  # its open content part index
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index (open calls)
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None

    # -- helpers
    def _ev(self, kind: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def _snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        return response_object(self.call, response_id=self.response_id, model=self.model,
                               output=copy.deepcopy(self.output), usage=kw.pop("usage", None), status=status,
                               created_at=self.created_at, **kw)

    def start(self) -> list[dict[str, Any]]:
        snap = self._snapshot("in_progress")
        return [self._ev("response.created", response=snap), self._ev("response.in_progress", response=snap)]

    def _open_message(self) -> list[dict[str, Any]]:
        evs = self._close_calls()
        item = {"type": "message", "id": self._ids("msg"), "status": "in_progress", "role": "assistant", "content": []}
        self.output.append(item)
        self._msg = len(self.output) - 1
        self._open.add(self._msg)
        evs.append(self._ev("response.output_item.added", output_index=self._msg, item=copy.deepcopy(item)))
        return evs

    def _open_part(self, kind: str) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        if self._msg is None:
            evs += self._open_message()
        item = self.output[self._msg]  # type: ignore[index]
        if self._part is not None and item["content"][self._part]["type"] == kind:
            return evs
        evs += self._close_part()
        part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "output_text"
                else {"type": "refusal", "refusal": ""})
        item["content"].append(part)
        self._part = len(item["content"]) - 1
        evs.append(self._ev("response.content_part.added", item_id=item["id"], output_index=self._msg,
                            content_index=self._part, part=_bare_part(part)))
        return evs

    def _close_part(self) -> list[dict[str, Any]]:
        if self._msg is None or self._part is None:
            return []
        item = self.output[self._msg]
        part = item["content"][self._part]
        where = {"item_id": item["id"], "output_index": self._msg, "content_index": self._part}
        if part["type"] == "output_text":
            evs = [self._ev("response.output_text.done", **where, text=part["text"],
                            logprobs=copy.deepcopy(part["logprobs"]))]
        else:
            evs = [self._ev("response.refusal.done", **where, refusal=part["refusal"])]
        evs.append(self._ev("response.content_part.done", **where, part=copy.deepcopy(part)))
        self._part = None
        return evs

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        if self._msg is None:
            return []
        evs = self._close_part()
        item = self.output[self._msg]
        item["status"] = status
        evs.append(self._ev("response.output_item.done", output_index=self._msg, item=copy.deepcopy(item)))
        self._open.discard(self._msg)
        self._msg = None
        return evs

    def _close_calls(self, status: str = "completed") -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        for idx in sorted(self._calls.values()):
            item = self.output[idx]
            item["status"] = status
            evs.append(self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                                name=item["name"], arguments=item["arguments"]))
            evs.append(self._ev("response.output_item.done", output_index=idx, item=copy.deepcopy(item)))
            self._open.discard(idx)
        self._calls.clear()
        return evs

    # -- the stream
    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in stream_choices(chunk):
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, list):
                text = parts_text(text)
            if isinstance(text, str) and text:
                evs += self._open_part("output_text")
                part = self.output[self._msg]["content"][self._part]  # type: ignore[index]
                lps = token_logprobs(choice.get("logprobs")) if self.call.logprobs else []
                part["text"] += text
                part["logprobs"] += lps
                evs.append(self._ev("response.output_text.delta", item_id=self.output[self._msg]["id"],
                                    output_index=self._msg, content_index=self._part, delta=text, logprobs=lps))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                evs += self._open_part("refusal")
                part = self.output[self._msg]["content"][self._part]  # type: ignore[index]
                part["refusal"] += refusal
                evs.append(self._ev("response.refusal.delta", item_id=self.output[self._msg]["id"],
                                    output_index=self._msg, content_index=self._part, delta=refusal))
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                k = int(tc.get("index") or 0)
                fn = tc.get("function") or {}
                if k not in self._calls:
                    evs += self._close_message()
                    item = {"type": "function_call", "id": self._ids("fc"), "call_id": tc.get("id") or self._ids("call"),
                            "name": fn.get("name") or "", "arguments": "", "status": "in_progress"}
                    self.output.append(item)
                    self._calls[k] = len(self.output) - 1
                    self._open.add(self._calls[k])
                    evs.append(self._ev("response.output_item.added", output_index=self._calls[k],
                                        item=copy.deepcopy(item)))
                elif fn.get("name"):
                    self.output[self._calls[k]]["name"] += fn["name"]
                idx = self._calls[k]
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    self.output[idx]["arguments"] += args
                    evs.append(self._ev("response.function_call_arguments.delta", item_id=self.output[idx]["id"],
                                        output_index=idx, delta=args))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return evs

    def finish(self, usage_fallback: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Close what is open and end with ``response.completed`` (or ``response.incomplete``)."""
        status, details = finish_status(self.finish_reason)
        evs: list[dict[str, Any]] = []
        if not self.output:  # an empty answer is still one (empty) message, as in the non-streamed form
            evs += self._open_part("output_text")
        item_status = "incomplete" if status == "incomplete" else "completed"
        evs += self._close_message(item_status) + self._close_calls()
        self.response = self._snapshot(status, usage=response_usage(self.usage, usage_fallback),
                                       incomplete_details=details)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        evs.append(self._ev(kind, response=copy.deepcopy(self.response)))
        return evs

    def fail(self, error: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The model failed mid-stream: ``response.failed`` (with what was produced), then ``error``."""
        err = error if isinstance(error, dict) else {}
        message = str(err.get("message") or "the model failed while streaming")
        for idx in self._open:
            self.output[idx]["status"] = "incomplete"
        self._open.clear()
        self.response = self._snapshot("failed", error={"code": "server_error", "message": message},
                                       usage=response_usage(self.usage))
        return [self._ev("response.failed", response=copy.deepcopy(self.response)),
                self._ev("error", code=err.get("code") or "server_error", message=message, param=err.get("param"),
                         error={"type": err.get("type") or "server_error", "code": err.get("code") or "server_error",
                                "message": message, "param": err.get("param")})]


def _bare_part(part: dict[str, Any]) -> dict[str, Any]:
    return {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if part["type"] == "output_text" \
        else {"type": "refusal", "refusal": ""}
