"""One cell (a model answering one prompt, graded) and what a runner is given to compute.

Both runners call :func:`run_cell` where the model runs (the local process, or a Ray worker), so a
cell is queried, retried and graded the same way everywhere; they report each outcome to a
:class:`Sink` (the driver side: store, progress, report) and never write the store themselves.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Protocol

from ..backends.base import Backend, BackendError, ChatResult
from ..graders import Grader, GraderError
from ..promptsets import prompt_hash
from .spec import CollectError, ModelSpec
from .store import Cell

RETRIES = 2  # a backend error is retried this many times (with a short back-off) before the cell fails
CELL_ERRORS = (BackendError, GraderError)  # a failed cell: reported, retried by the next run

# a model and the cells it still has to compute: (prompt hash, the first item with that prompt)
Work = tuple[ModelSpec, list[tuple[str, dict]]]


async def run_cell(backend: Backend, grader: Grader, item: dict, spec: ModelSpec) -> Cell:
    """Query ``backend`` with the grader's messages and settings, grade the answer, price it."""
    gen = grader.generation
    last: Exception | None = None
    for attempt in range(RETRIES + 1):
        try:
            started = time.perf_counter()
            result: ChatResult = await backend.chat(
                grader.messages(item),
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                logprobs=gen.logprobs,
                top_logprobs=gen.top_logprobs,
            )
            latency = result.latency_s or (time.perf_counter() - started)
            break
        except BackendError as exc:
            last = exc
            await asyncio.sleep(0.5 * (attempt + 1))
    else:
        raise last  # type: ignore[misc]
    grade = await grader.grade(item, result)
    conf = grader.confidence(result, grade)
    return Cell(
        correct=float(min(1.0, max(0.0, grade.score))),
        cost=spec.cost(result.tokens_in, result.tokens_out),
        tokens_in=int(result.tokens_in),
        tokens_out=int(result.tokens_out),
        latency_s=float(latency),
        logprob=None if conf is None or not math.isfinite(conf) else float(conf),
        pred=grade.extracted,
        output=result.text,
    )


def failure_text(exc: BaseException) -> str:
    return str(exc)[:200]


@dataclass
class Plan:
    """The prompt set as cells: one hash per item, each distinct prompt computed once per model."""

    items: list[dict]
    hashes: list[str]
    first: dict[str, dict]  # distinct prompt hash -> the first item with it, in item order
    settings: str  # the grader's settings key (part of every cell's key)

    @classmethod
    def of(cls, items: list[dict], grader: Grader) -> "Plan":
        if not items:
            raise CollectError("the prompt set is empty")
        for it in items:
            try:
                grader.check_item(it)
            except GraderError as exc:
                raise CollectError(f"{it.get('item_id', '?')}: {exc}") from None
        hashes = [cell_key(grader, it) for it in items]
        first: dict[str, dict] = {}
        for h, it in zip(hashes, items):
            first.setdefault(h, it)
        return cls(items, hashes, first, grader.settings_key())

    def todo(self, done) -> list[tuple[str, dict]]:
        """The cells not in ``done`` (a container of prompt hashes), in item order."""
        return [(h, it) for h, it in self.first.items() if h not in done]


def cell_key(grader: Grader, item: dict) -> str:
    """What a cell is reused by: the messages the model is sent and the item's gold (``answer``, ``pattern``).
    A corrected gold makes the cell be computed again: with the prompt alone as its key the old grade was
    reused, contradicting the new answer on the same row (the grader's settings key the store separately)."""
    gold = {k: item[k] for k in ("answer", "pattern") if k in item}
    return prompt_hash(json.dumps({"messages": grader.messages(item), "gold": gold}, sort_keys=True, default=str))


def item_label(item: dict, phash: str) -> str:
    return str(item.get("item_id", phash))


class Sink(Protocol):
    """Where a runner reports: the driver commits, counts and shows each outcome as it arrives."""

    def describe(self, text: str) -> None: ...

    def done(self, spec: ModelSpec, phash: str, cell: Cell) -> None: ...

    def failed(self, spec: ModelSpec, phash: str, item: dict, error: str) -> None: ...

    def retried(self, spec: ModelSpec, phash: str, reason: str) -> None: ...


class Runner(Protocol):
    """Computes every cell of ``work`` and reports each one to ``sink`` exactly once (done or failed)."""

    async def run(self, work: list[Work], grader: Grader, sink: Sink) -> None: ...
