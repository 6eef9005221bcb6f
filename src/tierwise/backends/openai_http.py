"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Together, ...) over aiohttp.

One ``aiohttp.ClientSession`` per backend (created lazily inside the running event loop) keeps up to
``max_concurrency`` connections alive, so the gateway pays the TCP/TLS handshake once, not per
request; aiohttp costs the gateway well under half the CPU per request that httpx did. Every failure
(connect error, HTTP error status, malformed body, timeout) becomes a ``BackendError`` carrying the
status / timeout flag the gateway needs to fall back.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from contextlib import aclosing
from typing import AsyncIterator

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ..prices import estimate_tokens
from .base import BackendError, ChatResult, StreamDelta, TimedBackend

_timeout_cm = getattr(asyncio, "timeout", None)  # Python >= 3.11; 3.10 falls back to wait_for

# aiohttp's exception classes under the names httpx gave them, so error messages stay as they were
_TIMEOUT_NAMES = ((aiohttp.ConnectionTimeoutError, "ConnectTimeout"), (aiohttp.SocketTimeoutError, "ReadTimeout"))
_ERROR_NAMES = (
    (aiohttp.ClientConnectorError, "ConnectError"),
    (aiohttp.ServerDisconnectedError, "RemoteProtocolError"),
    (aiohttp.ClientPayloadError, "RemoteProtocolError"),
    (aiohttp.ClientResponseError, "RemoteProtocolError"),
    (aiohttp.ClientOSError, "NetworkError"),
)


def _ssl_context() -> ssl.SSLContext:
    """Verify like httpx did: SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's bundle."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile and os.path.isfile(cafile):
        return ssl.create_default_context(cafile=cafile)
    if capath and os.path.isdir(capath):
        return ssl.create_default_context(capath=capath)
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


async def _within(aw, limit: float):
    if _timeout_cm is not None:
        async with _timeout_cm(limit):
            return await aw
    return await asyncio.wait_for(aw, limit)


async def _lines(content: aiohttp.StreamReader, limit: float) -> AsyncIterator[bytes]:
    """Lines of a streamed body (LF, CRLF or CR endings), however the chunks split them.

    Each wait for more bytes gets ``limit`` from when it starts (httpx's read timeout), so a gateway
    timing the gap between deltas with the same budget sees its own deadline pass first.
    """
    pending: list[bytes] = []
    while True:
        chunk = await _within(content.readany(), limit)
        if not chunk:
            break
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        parts = chunk.split(b"\n")
        if pending:
            pending.append(parts[0])
            parts[0] = b"".join(pending)
            pending = []
        tail = parts.pop()
        if tail:
            pending.append(tail)
        for line in parts:
            yield line
    if pending:
        yield b"".join(pending)


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


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
        self.max_concurrency = max_concurrency
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._stream_timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running loop; made on first use (aiohttp binds it to the loop)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._session_loop is not loop:
            if session is not None and not session.closed:
                session.detach()  # its loop is gone; nothing left to await there
            connector = aiohttp.TCPConnector(
                limit=self.max_concurrency, limit_per_host=0, keepalive_timeout=5.0,  # httpx's keep-alive expiry
                ssl=_ssl_context() if self.url.startswith("https:") else True,
            )
            # HTTP(S)_PROXY / NO_PROXY read once here, as httpx did at construction: aiohttp's
            # trust_env would look them (and ~/.netrc) up in a worker thread on every request
            try:
                proxy, proxy_auth = get_env_proxy_for_url(URL(self.url))
            except LookupError:
                proxy, proxy_auth = None, None
            session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), proxy=proxy, proxy_auth=proxy_auth,
            )
            self._session, self._session_loop = session, loop
        return session

    def _payload(self, messages, max_tokens, temperature, stop, **extra) -> bytes:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            body["stop"] = stop
        body.update({k: v for k, v in extra.items() if v is not None})
        # as httpx's json= encoded it
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            kind = next((n for cls, n in _TIMEOUT_NAMES if isinstance(exc, cls)), "ReadTimeout")
            return BackendError(self.name, f"timed out after {self.timeout_s:g}s ({kind})", timeout=True)
        if isinstance(exc, aiohttp.ClientError):
            kind = next((n for cls, n in _ERROR_NAMES if isinstance(exc, cls)), type(exc).__name__)
            return BackendError(self.name, f"{kind} talking to {self.url}: {exc}")
        return BackendError(self.name, f"bad response from {self.url}: {type(exc).__name__}: {exc}")

    async def _post(self, session: aiohttp.ClientSession, data: bytes) -> tuple[int, bytes, str | None]:
        async with session.post(self.url, data=data, headers=self._headers, allow_redirects=False) as resp:
            return resp.status, await resp.read(), resp.charset

    async def _chat(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                    logprobs: bool, top_logprobs: int, limit: float) -> ChatResult:
        t0 = time.perf_counter()
        try:
            data = self._payload(
                messages, max_tokens, temperature, stop,
                logprobs=True if logprobs or top_logprobs else None,
                top_logprobs=top_logprobs or None,
            )
            session = self._client()
            # one budget for the whole request: slot in the pool, connect, send, answer
            if _timeout_cm is not None:
                async with _timeout_cm(limit):
                    status, raw, charset = await self._post(session, data)
            else:
                status, raw, charset = await asyncio.wait_for(self._post(session, data), limit)
            if not 200 <= status < 300:
                body = _decode(raw, charset)[:200]
                raise BackendError(self.name, f"HTTP {status} from {self.url}: {body}".rstrip(": "), status=status)
            data = json.loads(raw)
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
        text_parts: list[str] = []
        finish, usage = None, None
        try:
            data = self._payload(messages, max_tokens, temperature, stop, stream=True,
                                 stream_options={"include_usage": True})
            timeout = self._stream_timeouts.get(limit)
            if timeout is None:
                timeout = self._stream_timeouts[limit] = aiohttp.ClientTimeout(total=None, connect=limit)
            # connect + send + response headers within limit; then each read within limit (_lines)
            resp = await _within(self._client().post(self.url, data=data, headers=self._headers, timeout=timeout,
                                                     allow_redirects=False), limit)
            async with resp:
                if resp.status >= 400:
                    detail = (await resp.read()).decode(errors="replace")[:200]
                    raise BackendError(self.name, f"HTTP {resp.status} from {self.url}: {detail}",
                                       status=resp.status)
                async with aclosing(_lines(resp.content, limit)) as lines:
                    async for raw in lines:
                        if not raw.startswith(b"data:"):
                            continue
                        payload = raw[5:].decode("utf-8", errors="replace").strip()
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
        session, self._session = self._session, None
        if session is not None and not session.closed:
            if self._session_loop is asyncio.get_running_loop():
                await session.close()
            else:
                session.detach()
