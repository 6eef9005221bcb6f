"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Together, ...) over httpx.

One ``httpx.AsyncClient`` per backend keeps connections alive, so the gateway pays the TLS handshake
once, not per request. Every failure (connect error, HTTP error status, malformed body, timeout)
becomes a ``BackendError`` carrying the status / timeout flag the gateway needs to fall back.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

import httpx

from ..prices import estimate_tokens
from .base import BackendError, ChatResult, StreamDelta, TimedBackend


class OpenAIBackend(TimedBackend):
    """Chat completions against ``{endpoint}/chat/completions``."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        context_window: int = 4096,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
    ):
        self.name = name
        self.context_window = context_window
        self.model = model
        self.timeout_s = timeout_s
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    def _payload(self, messages, max_tokens, temperature, stop, **extra) -> dict:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            body["stop"] = stop
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
            return BackendError(self.name, f"timed out after {self.timeout_s:g}s ({type(exc).__name__})", timeout=True)
        if isinstance(exc, httpx.HTTPStatusError):
            try:
                body = exc.response.text[:200]
            except httpx.ResponseNotRead:
                body = ""
            return BackendError(self.name, f"HTTP {exc.response.status_code} from {self.url}: {body}".rstrip(": "),
                                status=exc.response.status_code)
        if isinstance(exc, httpx.HTTPError):
            return BackendError(self.name, f"{type(exc).__name__} talking to {self.url}: {exc}")
        return BackendError(self.name, f"bad response from {self.url}: {type(exc).__name__}: {exc}")

    async def _chat(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                    logprobs: bool, top_logprobs: int, limit: float) -> ChatResult:
        body = self._payload(
            messages, max_tokens, temperature, stop,
            logprobs=True if logprobs or top_logprobs else None,
            top_logprobs=top_logprobs or None,
        )
        t0 = time.perf_counter()
        try:
            resp = await asyncio.wait_for(self._client.post(self.url, json=body, timeout=limit), limit)
            resp.raise_for_status()
            data = resp.json()
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError):
                raise self._timeout(limit) from None
            raise self._error(exc) from None
        usage = data.get("usage") or {}
        token_lp, first_top = None, None
        content_lp = ((choice.get("logprobs") or {}).get("content")) or None
        if content_lp:
            token_lp = [float(t["logprob"]) for t in content_lp]
            tops = content_lp[0].get("top_logprobs") or []
            first_top = {t["token"]: float(t["logprob"]) for t in tops} or None
        return ChatResult(
            text=text,
            tokens_in=int(usage.get("prompt_tokens") or self.count_tokens(messages)),
            tokens_out=int(usage.get("completion_tokens") or estimate_tokens(text)),
            finish_reason=choice.get("finish_reason") or "stop",
            token_logprobs=token_lp,
            first_token_top=first_top,
            latency_s=time.perf_counter() - t0,
        )

    async def _stream(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                      limit: float) -> AsyncIterator[StreamDelta]:
        """Server-sent events; ``limit`` bounds each wait (connect, first byte, gap between chunks)."""
        body = self._payload(messages, max_tokens, temperature, stop, stream=True,
                             stream_options={"include_usage": True})
        text_parts: list[str] = []
        finish, usage = None, None
        try:
            async with self._client.stream("POST", self.url, json=body, timeout=limit) as resp:
                if resp.status_code >= 400:
                    detail = (await resp.aread()).decode(errors="replace")[:200]
                    raise BackendError(self.name, f"HTTP {resp.status_code} from {self.url}: {detail}",
                                       status=resp.status_code)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if chunk.get("error"):
                        raise BackendError(self.name, f"error in stream: {chunk['error']}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            text_parts.append(piece)
                            yield StreamDelta(text=piece)
                        finish = choice.get("finish_reason") or finish
        except Exception as exc:
            raise self._error(exc) from None
        usage = usage or {}
        yield StreamDelta(
            finish_reason=finish or "stop",
            tokens_in=int(usage.get("prompt_tokens") or self.count_tokens(messages)),
            tokens_out=int(usage.get("completion_tokens") or estimate_tokens("".join(text_parts))),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
