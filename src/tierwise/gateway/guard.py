"""What every request passes before the engine sees it: the client key and the body size limit."""

from __future__ import annotations

from typing import Iterable

from starlette.requests import Request

from ..errors import AuthError, RequestError


class Guard:
    def __init__(self, api_keys: Iterable[str] | None, max_body_bytes: int):
        self.api_keys = frozenset(k for k in (api_keys or ()) if k)
        self.max_body_bytes = int(max_body_bytes)

    def check_auth(self, request: Request) -> None:
        """``Authorization: Bearer <key>`` (or ``x-api-key``) when keys are configured."""
        if not self.api_keys:
            return
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if key not in self.api_keys:
            raise AuthError("invalid or missing API key (send 'Authorization: Bearer <key>')")

    @staticmethod
    def check_json(request: Request) -> None:
        """A body sent as something other than JSON is refused rather than guessed at."""
        ctype = request.headers.get("content-type")
        if ctype is not None and "json" not in ctype.lower():
            raise RequestError(f"content-type must be application/json (got {ctype[:80]!r})", status=415,
                               code="unsupported_media_type")

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RequestError(f"request body is {declared} bytes; the limit is {self.max_body_bytes}",
                               status=413, code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestError(f"request body exceeds the limit of {self.max_body_bytes} bytes",
                                   status=413, code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)
