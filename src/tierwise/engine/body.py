"""Reading a request body as JSON: the one loader every surface uses.

``json.loads`` accepts two things no model can take, and both used to reach the backends:

- a lone UTF-16 surrogate escape (``"\\ud83d"`` without its pair: a client that cut an emoji in half).
  Python keeps it as a character that cannot be encoded as UTF-8, so the backend's tokenizer failed,
  every model in turn, as a *backend* error: one malformed client opened every circuit breaker;
- nesting deeper than the parser's recursion limit (``[[[[...]]]]`` in any field), which raised
  ``RecursionError``: an unhandled 500.

:func:`load_json` raises ``ValueError`` for both, as for any invalid JSON, so every surface answers them
with its own ``invalid_json`` 400. Well-formed surrogate *pairs* (how ``ensure_ascii`` encoders send
emoji) decode to ordinary characters and pass.
"""

from __future__ import annotations

import json
import re
from typing import Any

# a surrogate escape, high or low (the cheap test: most bodies have none, and are not walked)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())


def load_json(raw: bytes | bytearray | str) -> Any:
    """The body as JSON; ``ValueError`` naming the problem if it is not JSON a model can read."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None
    pattern = _SURROGATE_ESCAPE if isinstance(raw, str) else _SURROGATE_ESCAPE_BYTES
    if pattern.search(raw):
        where = _lone_surrogate(body, "")
        if where is not None:
            raise ValueError(f"{where or 'the body'} has a lone UTF-16 surrogate (half of a character's escape "
                             "pair), which is not Unicode text")
    return body


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in ``value`` that is not encodable as UTF-8, else None."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and not _encodable(v):
                return p
        elif isinstance(v, dict):
            for k, item in v.items():
                if not k.isascii() and not _encodable(k):
                    return p or "a key"
                stack.append((item, f"{p}.{k}" if p else k))
        elif isinstance(v, list):
            stack.extend((item, f"{p}[{i}]") for i, item in enumerate(v))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
