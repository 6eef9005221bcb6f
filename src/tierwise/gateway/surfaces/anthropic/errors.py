"""Anthropic's error object, ``{"type": "error", "error": {"type", "message"}, "request_id"}``, and
which tierwise error becomes which (pure; the table is in ``routes``'s module doc)."""

from __future__ import annotations

from typing import Any

from ....errors import AuthError, Overloaded, TierwiseError, UpstreamRejected

__all__ = ["OVERLOADED_STATUS", "error_type", "error_body", "wire_error"]

OVERLOADED_STATUS = 529  # Anthropic's overloaded_error status (the anthropic SDK's OverloadedError)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (other 4xx: invalid_request_error; 5xx: api_error)."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` (+ ``request_id`` when known), Anthropic's shape."""
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def wire_error(exc: TierwiseError, request_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, Anthropic error body) for a tierwise error."""
    message = exc.message
    if isinstance(exc, UpstreamRejected):
        status = exc.status
        err = exc.upstream_body.get("error") if isinstance(exc.upstream_body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        elif isinstance(exc.upstream_body, dict) and isinstance(exc.upstream_body.get("message"), str):
            message = exc.upstream_body["message"]
    elif isinstance(exc, Overloaded) or exc.code == "overloaded":
        status = OVERLOADED_STATUS
    elif exc.status == 422:
        status = 400  # Anthropic answers every validation problem with a 400
    else:
        status = exc.status
    if isinstance(exc, AuthError):
        message = "invalid or missing API key (send 'x-api-key: <key>' or 'Authorization: Bearer <key>')"
    return status, error_body(error_type(status), message, request_id)
