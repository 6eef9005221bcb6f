"""Every error tierwise raises on purpose, under one root.

``TierwiseError`` carries what both shells need to report it once: an HTTP ``status`` and OpenAI's
``type`` / ``code`` / ``param`` for the gateway (``gateway.errors`` encodes it as
``{"error": {...}}``), and a one-line message for the CLI (``error: <message>``, exit 2). Modules
raise the narrow class; nobody formats an error twice.

Two families matter to the engine's fallback rule:

* ``BackendError``: a model call failed for a reason that is not the request's fault (connection,
  timeout, 429, 5xx, a crash). The engine tries the next model.
* ``UpstreamRejected``: the backend refused *the request* (400/404/413/422 with an OpenAI error
  body). It is the client's own error: returned as-is, never retried on another model.
"""

from __future__ import annotations

from typing import Any


class TierwiseError(Exception):
    """Root of tierwise's errors. ``status``/``type``/``code`` say how the gateway answers it."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None,
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- the client's request ------------------------------------------------------------------------


class RequestError(TierwiseError):
    """The request is malformed or asks for something no model here can do (4xx)."""

    status, type, code = 400, "invalid_request_error", "invalid_value"


class AuthError(RequestError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotFound(RequestError):
    status, code = 404, "model_not_found"


class CapabilityError(RequestError):
    """The request needs a capability (tools, vision, ...) that no candidate model declares."""

    code = "unsupported_capability"


class ContextLengthExceeded(RequestError):
    code = "context_length_exceeded"


# -- the gateway or its models -------------------------------------------------------------------


class Overloaded(TierwiseError):
    """Too much in flight, or every model's slots busy: retry later (503 + retry-after)."""

    status, code = 503, "overloaded"

    def __init__(self, message: str, **kw: Any):
        kw.setdefault("headers", {"retry-after": "1"})
        super().__init__(message, **kw)


class AllModelsFailed(TierwiseError):
    status, code = 502, "backend_error"


class BackendError(TierwiseError, RuntimeError):
    """A model call failed (connection, timeout, 429, 5xx, crash): the engine falls back on it."""

    status, code = 502, "backend_error"

    def __init__(self, backend: str, message: str, *, status: int | None = None, timeout: bool = False):
        self.backend = backend
        self.upstream_status = status
        self.timeout = timeout
        super().__init__(f"{backend}: {message}")


class UpstreamRejected(BackendError):
    """The backend refused the request itself (4xx with an error body): the client's own error.

    ``body`` is the backend's error object, returned to the client unchanged with ``upstream_status``.
    """

    def __init__(self, backend: str, status: int, body: dict[str, Any]):
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else None
        super().__init__(backend, f"HTTP {status}: {msg or 'request rejected'}", status=status)
        self.status = status
        self.type = (err or {}).get("type") or "invalid_request_error"
        self.code = (err or {}).get("code")
        self.upstream_body = body

    def body(self) -> dict[str, Any]:
        return self.upstream_body


# -- files and configuration ---------------------------------------------------------------------


class ConfigError(TierwiseError, ValueError):
    """A pyramid file (or an environment variable it names) is unusable; the message says where."""


class LogError(TierwiseError, RuntimeError):
    """The decision log cannot be opened or written (bad path, missing psycopg, unreachable database)."""

    status, code = 503, "log_unavailable"


class CascadeError(TierwiseError, ValueError):
    """Bad thresholds file, target, or table for the cascade; the message names what to fix."""
