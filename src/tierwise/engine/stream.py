"""A streamed answer as the engine hands it out: chunk dicts, then the record is finished.

``ChatStream`` yields the answering model's ``chat.completion.chunk`` objects unchanged but for
``model``. It ends in one of three ways, and each finishes the record exactly once: the model
finished (200; tokens from the usage chunk if the client asked for one, else estimated), the
model failed after the first chunk (an OpenAI error object is yielded last; 502), or the consumer
left (``aclose``; 499, the model is stopped and its slot freed).

Cascade streams carry the chain on the finishing chunk as the extension field ``tierwise``
(``{"model", "router", "cost_usd", "chain", "steps"}``), which the official clients keep.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from ..backends.base import StreamTally
from ..decision import Decision
from ..errors import AllModelsFailed, TierwiseError
from .dispatch import OpenStream
from .record import CascadeStep, RequestRecord
from .slot import Slot

if TYPE_CHECKING:
    from .engine import Engine


def completion_chunks(body: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """A finished ``chat.completion`` as the chunks a stream of it would have sent."""
    base = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created") or int(time.time()),
            "model": body.get("model"), "system_fingerprint": body.get("system_fingerprint")}
    chunks: list[dict[str, Any]] = []
    for choice in body.get("choices") or ():
        i = choice.get("index", 0)
        msg = dict(choice.get("message") or {})
        calls = msg.pop("tool_calls", None)
        delta = {"role": msg.pop("role", "assistant"), **msg}
        chunks.append({**base, "choices": [{"index": i, "delta": delta, "logprobs": choice.get("logprobs"),
                                            "finish_reason": None}]})
        if calls:
            chunks.append({**base, "choices": [{"index": i, "delta": {"tool_calls": [
                {"index": k, **c} for k, c in enumerate(calls)]}, "logprobs": None, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                            "finish_reason": choice.get("finish_reason") or "stop"}]})
    if include_usage and body.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks


async def _listed(chunks: Sequence[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for c in chunks:
        yield c


class ChatStream:
    """Iterate for chunk dicts; ``record`` is final once iteration ends or ``aclose`` ran."""

    def __init__(self, engine: "Engine", record: RequestRecord, slot: Slot,
                 source: OpenStream | Sequence[dict[str, Any]], *, decision: Decision | None = None,
                 include_usage: bool = False, cascade_steps: list[CascadeStep] | None = None, done: bool = False):
        self.engine, self.record, self.slot, self.decision = engine, record, slot, decision
        self.include_usage = include_usage
        self.cascade_steps = cascade_steps
        self._opened = source if isinstance(source, OpenStream) else None
        self._chunks = None if self._opened is not None else list(source)
        self._done = done  # a kept lower cascade answer: tokens and cost are already on the record
        self._prompt_tokens = 0
        self._finished = False

    async def estimate_prompt_cost(self, messages: list[dict], tools: list[dict] | None = None) -> None:
        """Before the first byte: the prompt's cost (the header's estimate; the log gets the full cost)."""
        if self._done:
            return
        backend = self.slot.backend
        count = backend.count_tokens
        self._prompt_tokens = await asyncio.to_thread(count, messages, tools) if not getattr(
            backend, "cheap_count", True) else count(messages, tools)
        prior = sum(s.cost_usd for s in self.cascade_steps or ())
        self.record.cost_usd = prior + self.slot.cost(self._prompt_tokens, 0)

    @property
    def cost_estimated(self) -> bool:
        return not self._done

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._run()

    async def _run(self) -> AsyncIterator[dict[str, Any]]:
        name = self.slot.name
        status, error = 200, None
        held: list[dict[str, Any]] = []  # cascade: the finishing chunk (and after) waits for the totals
        tally = self._opened.tally if self._opened is not None else StreamTally()
        source = self._opened if self._opened is not None else _listed(self._chunks)
        try:
            async for chunk in source:
                if self.record.upstream_id is None and isinstance(chunk.get("id"), str):
                    self.record.upstream_id = chunk["id"]
                chunk["model"] = name
                if self._opened is None:
                    tally.add(chunk)
                if self.cascade_steps is not None and (held or _finishes(chunk)):
                    held.append(chunk)
                    continue
                yield chunk
            self._settle(tally)
            if held:  # the finishing chunk and the last one (the usage chunk, when asked for) carry the chain
                held[0]["tierwise"] = held[-1]["tierwise"] = self._cascade_info()
                for chunk in held:
                    yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client closed the stream"
            raise
        except Exception as exc:  # after the first chunk there is no fallback: end with an error object
            from .dispatch import public_reason
            from .slot import failure_reason

            detail = str(exc) or type(exc).__name__  # the log's; the client hears what, not where
            if isinstance(exc, TierwiseError) and "stalled" in detail:
                public = detail
            else:
                public = f"{name}: {public_reason(exc, failure_reason(exc), self.slot.timeout_s)} mid-stream"
            status, error = 502, detail
            self._settle(tally, outcome="error")
            yield AllModelsFailed(public).body()
        finally:
            await self._end(status, error)

    def _settle(self, tally: StreamTally, *, outcome: str = "kept") -> None:
        """Tokens and cost on the record once the model has stopped."""
        if self._done:
            return
        t_in, t_out, estimated = tally.usage(self._prompt_tokens)
        rec = self.record
        if self.cascade_steps is not None:
            if not any(s.model == self.slot.name for s in self.cascade_steps):
                self.cascade_steps.append(CascadeStep(self.slot.name, None, outcome,
                                                      t_in, t_out, self.slot.cost(t_in, t_out)))
            self.engine._cascade_spent(rec, self.cascade_steps)
        else:
            rec.tokens_in, rec.tokens_out = int(t_in), int(t_out)
            rec.cost_usd = self.slot.cost(rec.tokens_in, rec.tokens_out)
        rec.usage_estimated = estimated
        self._done = True

    def _cascade_info(self) -> dict[str, Any]:
        from .cascade import chain_header

        rec = self.record
        return {"model": rec.model, "router": "cascade", "cost_usd": rec.cost_usd,
                "chain": chain_header(rec.cascade_chain), "steps": rec.cascade_chain}

    async def _end(self, status: int, error: str | None) -> None:
        if self._finished:
            return
        self._finished = True
        if self._opened is not None:
            await self._opened.aclose()
        if not self._done:  # cut off before the end: the prompt and what was sent were paid for
            self._settle(self._opened.tally if self._opened is not None else StreamTally(),
                         outcome="kept" if status == 499 else "error")
        self.engine.release(self.record)
        self.engine._finish(self.record, status, error)

    async def aclose(self, status: int = 499, error: str | None = "client closed the stream") -> None:
        """End early (the client left before or while streaming): stop the model, finish the record."""
        await self._end(status, error)


def _finishes(chunk: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())
