"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn times out idle keep-alive connections, but not a connection that has sent part of its
headers: a client trickling a header byte at a time ("slowloris") holds its socket, and enough
of them exhaust the process's file descriptors before a single request reaches the app (where
the body deadline and the in-flight caps live). Here every request's headers must be complete
within ``HeaderDeadline.timeout_s`` of its first byte (or of the connection opening); past it the
client gets a 408 in OpenAI's error shape and the connection is closed.

``tierwise serve`` and ``tierwise dashboard`` pass this class to uvicorn by its import path (each
worker imports it); :func:`header_timeout` sets ``timeout_s`` from the pyramid's ``header_timeout_s``
in the process that serves (for the gateway: when its app is built, in each worker).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import DEFAULT_HEADER_TIMEOUT_S

IMPORT_PATH = "tierwise.gateway._http:HeaderDeadline"

_BODY = json.dumps({"error": {"message": "request headers not received in time", "type": "invalid_request_error",
                              "param": None, "code": "request_timeout"}}).encode()
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class HeaderDeadline(HttpToolsProtocol):
    timeout_s: float = DEFAULT_HEADER_TIMEOUT_S

    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_408)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle between requests is uvicorn's keep-alive timeout's business


def header_timeout(timeout_s: float) -> str:
    """Give every connection this process serves ``timeout_s`` to send its headers; returns the
    protocol's import path for ``uvicorn.run(..., http=...)``."""
    HeaderDeadline.timeout_s = float(timeout_s)
    return IMPORT_PATH
