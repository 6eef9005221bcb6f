"""The one interface every model backend implements.

The gateway, ``collect`` and the cascade all talk to models through this, so a local GGUF model and
a hosted API are interchangeable. Backends are async because the gateway is; blocking work (llama.cpp)
runs in a worker thread behind a per-model semaphore.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import AsyncIterator


class BackendError(RuntimeError):
    """The backend failed (connection, HTTP 5xx, crash, timeout). The gateway falls back on it."""

    def __init__(self, backend: str, message: str, *, status: int | None = None, timeout: bool = False):
        self.backend = backend
        self.status = status
        self.timeout = timeout
        super().__init__(f"{backend}: {message}")


@dataclass
class ChatResult:
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str = "stop"
    # log-probabilities of the generated tokens, when asked for (the cascade's confidence signal)
    token_logprobs: list[float] | None = None
    # top alternatives of the first generated token {token_text: logprob}, when asked for (MC grading)
    first_token_top: dict[str, float] | None = None
    latency_s: float = 0.0


@dataclass
class StreamDelta:
    """One streamed piece; the last one carries finish_reason and token usage."""

    text: str = ""
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """A chat model reachable in-process or over HTTP."""

    name: str
    context_window: int

    @abstractmethod
    async def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        timeout: float | None = None,
    ) -> ChatResult: ...

    @abstractmethod
    def stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamDelta]: ...

    def count_tokens(self, messages: list[dict]) -> int:
        """Prompt tokens of a conversation; backends with a tokenizer override this estimate."""
        from ..prices import estimate_tokens

        return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages) + 2

    async def aclose(self) -> None:
        return None


class TimedBackend(Backend):
    """A backend with its own time budget ``timeout_s``, which a call's ``timeout`` overrides.

    The ``chat`` / ``stream`` signature and that budget rule live here once: subclasses write
    ``_chat`` and ``_stream``, which get the call's options as keywords and its budget as ``limit``.
    """

    timeout_s: float

    async def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        timeout: float | None = None,
    ) -> ChatResult:
        return await self._chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                logprobs=logprobs, top_logprobs=top_logprobs, limit=timeout or self.timeout_s)

    def stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamDelta]:
        return self._stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                            limit=timeout or self.timeout_s)

    @abstractmethod
    async def _chat(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                    logprobs: bool, top_logprobs: int, limit: float) -> ChatResult: ...

    @abstractmethod
    def _stream(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                limit: float) -> AsyncIterator[StreamDelta]: ...

    def _timeout(self, limit: float) -> BackendError:
        return BackendError(self.name, f"timed out after {limit:g}s", timeout=True)
