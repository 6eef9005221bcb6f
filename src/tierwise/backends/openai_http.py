"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Together, ...) over aiohttp.

One ``aiohttp.ClientSession`` per backend (created lazily inside the running event loop) keeps up to
``max_concurrency`` connections alive, so the gateway pays the TCP/TLS handshake once, not per
request; aiohttp costs the gateway well under half the CPU per request that httpx did. Every failure
(connect error, 429/5xx, malformed body, timeout) becomes a ``BackendError``, which the engine falls
back on; a 400/404/413/422 with an OpenAI error body is the request's own fault and becomes
``UpstreamRejected``, which is returned to the client as-is.

The same code posts to ``{base}/chat/completions``, ``{base}/completions`` (legacy, ``complete_text``
/ ``stream_text``) and ``{base}/embeddings`` (``embed``), ``base`` being the endpoint with any
``/chat/completions`` suffix removed: one request path, one stream reader, one error mapping.

Fidelity: the client's body goes upstream unchanged but for ``model`` (this backend's remote id) and
``stream``; the answer comes back as the backend sent it. Error messages name the backend, not its
URL (clients must not learn where the pyramid's models live).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from contextlib import aclosing
from typing import Any, AsyncIterator

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .base import Backend, BackendError, Completion, UpstreamRejected

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


# an upstream 4xx with an error body that is about the request itself: the client's error, not retried
CLIENT_ERRORS = frozenset({400, 404, 413, 422})
CHAT_PATH, TEXT_PATH, EMBEDDINGS_PATH = "/chat/completions", "/completions", "/embeddings"


class OpenAIBackend(Backend):
    """``{endpoint}/chat/completions``, and ``{endpoint}/completions`` / ``{endpoint}/embeddings``."""

    # what an OpenAI-compatible text model usually serves; vision/audio must be declared in config, and
    # an embedding model declares ``capabilities: [embeddings]`` (it is its own pyramid entry)
    capabilities = frozenset({"tools", "json_object", "json_schema", "logprobs", "n", "completions"})

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
        capabilities: frozenset[str] | None = None,
    ):
        self.name = name
        if capabilities is not None:
            self.capabilities = frozenset(capabilities)
        self.context_window = context_window
        self.model = model
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        base = endpoint.rstrip("/")
        self.base_url = base[: -len(CHAT_PATH)] if base.endswith(CHAT_PATH) else base
        self.url = self.base_url + CHAT_PATH
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

    def _payload(self, body: dict[str, Any], stream: bool) -> bytes:
        """The client's body as sent, with this backend's remote model id (and ``stream``) set."""
        out = {**body, "model": self.model}
        if "prefill" not in self.capabilities:  # hosted APIs refuse the field; the turn is sent as it is
            out.pop("continue_final_message", None)
        if stream:
            out["stream"] = True
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        # as httpx's json= encoded it
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    def _error(self, exc: Exception, limit: float) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            kind = next((n for cls, n in _TIMEOUT_NAMES if isinstance(exc, cls)), "ReadTimeout")
            return BackendError(self.name, f"timed out after {limit:g}s ({kind})", timeout=True)
        if isinstance(exc, aiohttp.ClientError):
            kind = next((n for cls, n in _ERROR_NAMES if isinstance(exc, cls)), type(exc).__name__)
            return BackendError(self.name, f"{kind}: {exc}")
        return BackendError(self.name, f"bad response: {type(exc).__name__}: {exc}")

    def _status_error(self, status: int, raw: bytes, charset: str | None) -> BackendError:
        """An HTTP error status: the request's own fault (returned as-is) or the backend's (fall back)."""
        if status in CLIENT_ERRORS:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("error"), (dict, str)):
                if isinstance(body["error"], str):
                    body = {"error": {"message": body["error"], "type": "invalid_request_error",
                                      "param": None, "code": None}}
                return UpstreamRejected(self.name, status, body)
        detail = _decode(raw, charset)[:200]
        return BackendError(self.name, f"HTTP {status}: {detail}".rstrip(": "), status=status)

    async def _post(self, session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, bytes, str | None]:
        async with session.post(url, data=data, headers=self._headers, allow_redirects=False) as resp:
            return resp.status, await resp.read(), resp.charset

    async def _call(self, path: str, body: dict[str, Any], timeout: float | None, field: str) -> tuple[dict, float]:
        """One non-streamed POST to ``{base_url}{path}``: the answer (it must have a list ``field``) and
        the seconds it took."""
        limit = self._budget(timeout)
        t0 = time.perf_counter()
        try:
            data = self._payload(body, stream=False)
            session = self._client()
            # one budget for the whole request: slot in the pool, connect, send, answer
            status, raw, charset = await _within(self._post(session, self.base_url + path, data), limit)
            if not 200 <= status < 300:
                raise self._status_error(status, raw, charset)
            answer = json.loads(raw)
            if not isinstance(answer, dict) or not isinstance(answer.get(field), list):
                raise BackendError(self.name, f"bad response: no '{field}' in the body")
        except Exception as exc:
            raise self._error(exc, limit) from None
        return answer, time.perf_counter() - t0

    async def complete(self, body: dict[str, Any], *, timeout: float | None = None) -> Completion:
        answer, took = await self._call(CHAT_PATH, body, timeout, "choices")
        return Completion.from_body(answer, self.count_tokens(body.get("messages") or [], body.get("tools")), latency_s=took)

    async def complete_text(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return (await self._call(TEXT_PATH, body, timeout, "choices"))[0]

    async def embed(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return (await self._call(EMBEDDINGS_PATH, body, timeout, "data"))[0]

    def stream(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._events(CHAT_PATH, body, timeout)

    def stream_text(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._events(TEXT_PATH, body, timeout)

    async def _events(self, path: str, body: dict[str, Any], timeout: float | None) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events; ``timeout`` bounds each wait (connect, first byte, gap between chunks)."""
        limit = self._budget(timeout)
        try:
            data = self._payload(body, stream=True)
            client_timeout = self._stream_timeouts.get(limit)
            if client_timeout is None:
                client_timeout = self._stream_timeouts[limit] = aiohttp.ClientTimeout(total=None, connect=limit)
            # connect + send + response headers within limit; then each read within limit (_lines)
            resp = await _within(self._client().post(self.base_url + path, data=data, headers=self._headers,
                                                     timeout=client_timeout, allow_redirects=False), limit)
            async with resp:
                if resp.status >= 400:
                    raise self._status_error(resp.status, await _within(resp.read(), limit), resp.charset)
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    detail = (await _within(resp.read(), limit)).decode(errors="replace")[:200]
                    raise BackendError(self.name, f"asked for a stream, got {ctype or 'no content type'}: {detail}")
                ended = False
                async with aclosing(_lines(resp.content, limit)) as lines:
                    async for raw in lines:
                        if not raw.startswith(b"data:"):
                            continue
                        payload = raw[5:].strip()
                        if payload == b"[DONE]":
                            ended = True
                            break
                        chunk = json.loads(payload)
                        if isinstance(chunk, dict) and chunk.get("error"):
                            raise BackendError(self.name, f"error in stream: {chunk['error']}")
                        if isinstance(chunk, dict) and any(
                                isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ()):
                            ended = True
                        yield chunk
                if not ended:
                    raise BackendError(self.name, "stream ended without a finish_reason or [DONE]")
        except Exception as exc:
            raise self._error(exc, limit) from None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            if self._session_loop is asyncio.get_running_loop():
                await session.close()
            else:
                session.detach()
