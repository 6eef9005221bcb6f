"""What every request passes before the engine sees it: the client key, the content type, the body
(size limit, and a deadline so slow bodies cannot hold the gateway), and the client staying
connected while a non-streamed answer is computed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Iterable

from starlette.requests import Request

from ..config import DEFAULT_BODY_TIMEOUT_S
from ..errors import AuthError, RequestError, TierwiseError
from ..keystore import key_hash  # defined beside the stored keys (no import cycle); re-exported here


@dataclass(frozen=True)
class Client:
    """Who sent a request: ``key_hash`` None on an open gateway; admins may act on any request."""

    key_hash: str | None
    admin: bool


class ClientGone(TierwiseError):
    """The client closed the connection before its answer was ready (logged as 499)."""

    status, code = 499, "client_closed_request"


class Guard:
    """Keys are held as hashes only: the config's keys are hashed at start, database keys
    (``tierwise keys``) are stored hashed and swapped in by :meth:`set_stored`."""

    def __init__(self, api_keys: Iterable[str] | None, max_body_bytes: int, *,
                 admin_keys: Iterable[str] | None = None, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
        self._config_admin = frozenset(key_hash(k) for k in (admin_keys or ()) if k)
        self._config = frozenset(key_hash(k) for k in (api_keys or ()) if k) | self._config_admin
        self.api_keys, self.admin_keys = self._config, self._config_admin  # hashes of every accepted key
        self.max_body_bytes = int(max_body_bytes)
        self.body_timeout_s = float(body_timeout_s)

    def set_stored(self, hashes: Iterable[str], admin_hashes: Iterable[str]) -> None:
        """The database's live keys (re-read every few seconds): config keys plus these are accepted."""
        self.admin_keys = self._config_admin | frozenset(admin_hashes)
        self.api_keys = self._config | frozenset(hashes) | self.admin_keys

    @property
    def open(self) -> bool:
        return not self.api_keys

    def check_auth(self, request: Request) -> Client:
        """``Authorization: Bearer <key>`` (or ``x-api-key``) when keys are configured."""
        if not self.api_keys:
            return Client(None, True)  # an open gateway: everyone is everyone (localhost only)
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        h = key_hash(key) if key else ""
        if h not in self.api_keys:
            raise AuthError("invalid or missing API key (send 'Authorization: Bearer <key>')")
        return Client(h, h in self.admin_keys)

    @staticmethod
    def check_json(request: Request) -> None:
        """A body sent as something other than JSON is refused rather than guessed at."""
        ctype = request.headers.get("content-type")
        if ctype is not None and "json" not in ctype.lower():
            raise RequestError(f"content-type must be application/json (got {ctype[:80]!r})", status=415,
                               code="unsupported_media_type")

    async def read_body(self, request: Request) -> bytes:
        """The whole body within the size limit and ``body_timeout_s`` (408 past it)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RequestError(f"request body is {declared} bytes; the limit is {self.max_body_bytes}",
                               status=413, code="request_too_large")
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.body_timeout_s):
                size = 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise RequestError(f"request body exceeds the limit of {self.max_body_bytes} bytes",
                                           status=413, code="request_too_large")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(f"request body not received within {self.body_timeout_s:g}s", status=408,
                               code="request_timeout") from None
        return b"".join(chunks)


async def while_connected(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work`` unless the client hangs up first; then cancel it (a local model stops
    decoding, an upstream request is dropped) and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    raise ClientGone("client closed the connection before the answer was ready")
