"""The one interface every model backend implements: OpenAI chat-completions bodies in and out.

A backend takes the client's request body (a dict in OpenAI's chat-completions shape, every field
the client sent, ``model`` ignored: the backend knows its own remote model id) and returns the
model's ``chat.completion`` object (:class:`Completion`) or yields its ``chat.completion.chunk``
objects (``stream``). Nothing is dropped or injected on the way: an OpenAI-compatible endpoint gets
the body as sent; a local llama.cpp model implements the fields itself (tools, response_format,
logprobs ...). The gateway, ``collect`` and the cascade all use this, so a local GGUF model and a
hosted API are interchangeable.

Failures: ``BackendError`` (connection, timeout, 429, 5xx: the engine falls back) or
``UpstreamRejected`` (the request itself was refused: the client's error, never retried).

Backends with the ``embeddings`` / ``completions`` capability also answer ``embed`` (an OpenAI
``create embedding`` body in, its ``list`` of embeddings out) and ``complete_text`` / ``stream_text``
(legacy ``/v1/completions``: ``text_completion`` objects and chunks), under the same rules.

``chat()`` is the small convenience the offline tools use (collect, graders): messages and a few
options in, a :class:`ChatResult` with text, tokens and log-probabilities out.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..errors import BackendError, UpstreamRejected

__all__ = ["Backend", "BackendError", "UpstreamRejected", "Completion", "ChatResult", "StreamTally",
           "message_text", "CAPABILITIES"]

# What a request can need and a model can declare (config ``capabilities:``); see engine/capabilities.py
CAPABILITIES = ("tools", "json_object", "json_schema", "vision", "audio", "logprobs", "n", "completions", "embeddings",
                "prefill")


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text of its parts (images etc. skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
            elif isinstance(part, str):
                out.append(part)
        return "\n".join(out)
    return str(content)


def _usage_int(usage: dict, key: str) -> int | None:
    v = usage.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class Completion:
    """A model's ``chat.completion`` object as it returned it, plus what tierwise reads from it."""

    body: dict[str, Any]
    tokens_in: int = 0  # from usage, else estimated (usage_estimated)
    tokens_out: int = 0
    usage_estimated: bool = False
    latency_s: float = 0.0

    @property
    def choice(self) -> dict[str, Any]:
        choices = self.body.get("choices") or [{}]
        return choices[0] if isinstance(choices[0], dict) else {}

    @property
    def message(self) -> dict[str, Any]:
        return self.choice.get("message") or {}

    @property
    def text(self) -> str:
        return message_text(self.message.get("content"))

    @property
    def finish_reason(self) -> str:
        return self.choice.get("finish_reason") or "stop"

    @property
    def token_logprobs(self) -> list[float] | None:
        content = (self.choice.get("logprobs") or {}).get("content")
        if not content:
            return None
        return [float(t["logprob"]) for t in content if isinstance(t, dict) and "logprob" in t]

    @property
    def first_token_top(self) -> dict[str, float] | None:
        content = (self.choice.get("logprobs") or {}).get("content")
        if not content:
            return None
        tops = content[0].get("top_logprobs") or []
        return {t["token"]: float(t["logprob"]) for t in tops} or None

    @classmethod
    def from_body(cls, body: dict[str, Any], estimate_in: int, *, latency_s: float = 0.0) -> "Completion":
        """Tokens from ``usage`` when the model reported them; else ``estimate_in`` and a text estimate."""
        from ..prices import estimate_tokens

        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        t_in, t_out = _usage_int(usage, "prompt_tokens"), _usage_int(usage, "completion_tokens")
        c = cls(body, latency_s=latency_s)
        c.usage_estimated = t_in is None or t_out is None
        c.tokens_in = t_in if t_in is not None else estimate_in
        if t_out is None:
            import json

            calls = c.message.get("tool_calls")
            t_out = estimate_tokens(c.text + (json.dumps(calls) if calls else ""))
        c.tokens_out = t_out
        return c


@dataclass
class ChatResult:
    """What the offline tools need from one answer (``Backend.chat``)."""

    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str = "stop"
    token_logprobs: list[float] | None = None  # of the generated tokens, when asked for
    first_token_top: dict[str, float] | None = None  # top alternatives of the first token, when asked for
    latency_s: float = 0.0


@dataclass
class StreamTally:
    """Running totals over a stream's chunk objects: what was answered, how it ended, what it cost.

    ``started`` turns true at the first chunk that carries an answer (content, a tool call, a
    refusal) or a finish reason: the point after which a stream can no longer fall back.
    """

    text: list[str] = field(default_factory=list)
    pieces: int = 0
    tool_call_chars: int = 0
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    logprobs: list[float] = field(default_factory=list)
    started: bool = False

    def add(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.tokens_in = _usage_int(usage, "prompt_tokens") or self.tokens_in
            self.tokens_out = _usage_int(usage, "completion_tokens") or self.tokens_out
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece is None:
                piece = choice.get("text")  # a legacy ``text_completion`` chunk
            if piece:
                self.text.append(piece)
                self.pieces += 1
                self.started = True
            calls = delta.get("tool_calls")
            if calls:
                self.started = True
                for c in calls:
                    fn = (c or {}).get("function") or {}
                    self.tool_call_chars += len(fn.get("arguments") or "") + len(fn.get("name") or "")
                    self.pieces += 1
            if delta.get("refusal"):
                self.started = True
                self.pieces += 1
            lp = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
            for t in lp or ():
                if isinstance(t, dict) and "logprob" in t:
                    self.logprobs.append(float(t["logprob"]))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.started = True

    def usage(self, estimate_in: int) -> tuple[int, int, bool]:
        """(tokens_in, tokens_out, estimated): reported usage, else ``estimate_in`` and the pieces seen."""
        from ..prices import estimate_tokens

        estimated = self.tokens_in is None or self.tokens_out is None
        t_in = self.tokens_in if self.tokens_in is not None else estimate_in
        if self.tokens_out is not None:
            t_out = self.tokens_out
        else:
            t_out = max(self.pieces, estimate_tokens("".join(self.text)) if self.text else 0)
            t_out += (self.tool_call_chars + 3) // 4
        return t_in, t_out, estimated


class Backend(ABC):
    """A chat model reachable in-process or over HTTP."""

    name: str
    context_window: int
    timeout_s: float = 120.0
    # what this backend can do unless the config says otherwise (engine/capabilities.py)
    capabilities: frozenset[str] = frozenset()

    @abstractmethod
    async def complete(self, body: dict[str, Any], *, timeout: float | None = None) -> Completion:
        """Answer one chat-completions request body (``stream`` ignored) within ``timeout`` seconds."""

    @abstractmethod
    def stream(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield the answer's ``chat.completion.chunk`` objects; ``timeout`` bounds every wait.

        A usage chunk comes last only when the body asks for it (``stream_options.include_usage``).
        """

    # -- the other OpenAI endpoints (capabilities ``embeddings`` / ``completions``) ---------------

    async def embed(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Answer a ``POST /v1/embeddings`` body with OpenAI's ``{"object": "list", "data": [...],
        "model", "usage"}`` (``model`` ignored, as for chat)."""
        raise self._unsupported("embeddings")

    async def complete_text(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Answer a legacy ``POST /v1/completions`` body with a ``text_completion`` object."""
        raise self._unsupported("completions")

    async def stream_text(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield a legacy completion's ``text_completion`` chunks (``choices[].text``)."""
        raise self._unsupported("completions")
        yield {}  # pragma: no cover - makes this an async generator

    def _unsupported(self, endpoint: str) -> UpstreamRejected:
        return UpstreamRejected(self.name, 400, {"error": {
            "message": f"model {self.name!r} does not serve /v1/{endpoint}", "type": "invalid_request_error",
            "param": "model", "code": "unsupported_capability"}})

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """Prompt tokens of a conversation (and the tool definitions the prompt carries); backends with a
        tokenizer override this estimate."""
        from ..prices import estimate_tokens

        n = sum(estimate_tokens(message_text(m.get("content"))) + 4 for m in messages) + 2
        return n + (estimate_tokens(json.dumps(tools)) if tools else 0)

    async def chat(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0,
                   stop: list[str] | None = None, logprobs: bool = False, top_logprobs: int = 0,
                   timeout: float | None = None) -> ChatResult:
        """Messages in, text out: the offline tools' view of :meth:`complete`."""
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            body["stop"] = stop
        if logprobs or top_logprobs:
            body["logprobs"] = True
        if top_logprobs:
            body["top_logprobs"] = int(top_logprobs)
        c = await self.complete(body, timeout=timeout)
        return ChatResult(text=c.text, tokens_in=c.tokens_in, tokens_out=c.tokens_out,
                          finish_reason=c.finish_reason, token_logprobs=c.token_logprobs,
                          first_token_top=c.first_token_top, latency_s=c.latency_s)

    async def aclose(self) -> None:
        return None

    def _budget(self, timeout: float | None) -> float:
        return float(timeout or self.timeout_s)

    def _timeout(self, limit: float) -> BackendError:
        return BackendError(self.name, f"timed out after {limit:g}s", timeout=True)
