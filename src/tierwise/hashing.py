"""The one prompt hash: a stable id for a prompt, so repeats can be grouped without storing text.

The decision log keys requests by its 32-hex-digit form; outcome tables and collection cells by the
20-digit prefix of the same digest (kept short in CSVs; the first 20 digits of both agree).
"""

from __future__ import annotations

import hashlib


def prompt_hash(text: str, size: int = 32) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:size]
