"""One pyramid model as the engine uses it: its backend, prices, limits and capabilities.

A slot is the single place where a model call gets its rules: at most ``max_concurrency`` calls at
once (waiting longer than ``timeout_s`` for a free place is an *overloaded* failure), and the call
itself bounded by ``timeout_s`` (streams: the first chunk and every gap after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..backends.base import Backend, Completion
from ..errors import BackendError, UpstreamRejected
from ..prices import token_cost
from .health import Breaker


class QueueTimeout(BackendError):
    """No free concurrency place within the model's timeout."""


@dataclass
class Slot:
    name: str
    backend: Backend
    input_per_1m: float
    output_per_1m: float
    context_window: int
    timeout_s: float
    max_concurrency: int
    capabilities: frozenset[str] = frozenset()
    breaker: Breaker = field(default_factory=Breaker)
    _sem: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _loop: Any = field(default=None, init=False, repr=False)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return token_cost(tokens_in, tokens_out, self.input_per_1m, self.output_per_1m)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:  # one per event loop (tests run several)
            self._sem, self._loop = asyncio.Semaphore(max(1, int(self.max_concurrency))), loop
        return self._sem

    @property
    def in_use(self) -> int:
        sem = self._sem
        return 0 if sem is None else max(0, int(self.max_concurrency) - sem._value)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """One of the model's concurrency places; waiting longer than its timeout fails."""
        sem = self._semaphore()
        try:
            await within(sem.acquire(), self.timeout_s)
        except asyncio.TimeoutError:
            raise QueueTimeout(self.name, f"no free slot within {self.timeout_s:g}s (overloaded)") from None
        try:
            yield
        finally:
            sem.release()

    async def complete(self, body: dict[str, Any], method: str = "complete") -> Completion | Any:
        """One non-streamed call under the slot's rules; its outcome feeds the circuit breaker.

        ``method``: the backend's method (``complete``; ``embed`` / ``complete_text`` for the
        endpoints that are forwarded, not routed)."""
        async with self.hold():
            self.breaker.begin()
            try:
                call = getattr(self.backend, method)
                answer = await within(call(body, timeout=self.timeout_s), self.timeout_s)
            except asyncio.TimeoutError:
                self.breaker.failure()
                raise BackendError(self.name, f"no answer within {self.timeout_s:g}s", timeout=True) from None
            except BaseException as exc:
                self.judge(exc)
                raise
            self.breaker.success()
            return answer

    def judge(self, exc: BaseException) -> None:
        """A failed call's verdict for the breaker: the model's fault, or not (client error, cancel)."""
        if isinstance(exc, UpstreamRejected):
            self.breaker.success()  # it answered: alive, the request was the problem
        elif isinstance(exc, (BackendError, asyncio.TimeoutError)) and not isinstance(exc, QueueTimeout):
            self.breaker.failure()
        else:
            self.breaker.released()


async def within(aw: Any, seconds: float) -> Any:
    """Await with a deadline in the *current* task (wait_for's extra task breaks stream iterators
    that hold cancel scopes)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)  # pragma: no cover - Python 3.10


def failure_reason(exc: BaseException) -> str:
    """How a failed call is logged: overloaded | timeout | error."""
    if isinstance(exc, QueueTimeout):
        return "overloaded"
    if isinstance(exc, asyncio.TimeoutError) or (isinstance(exc, BackendError) and exc.timeout):
        return "timeout"
    return "error"
