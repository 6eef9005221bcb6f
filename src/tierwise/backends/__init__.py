"""Model backends: in-process llama.cpp and OpenAI-compatible HTTP endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, BackendError, ChatResult, Completion, StreamTally, UpstreamRejected

if TYPE_CHECKING:
    from ..config import ModelConfig

__all__ = ["Backend", "BackendError", "ChatResult", "Completion", "StreamTally", "UpstreamRejected", "build_backend"]


def build_backend(cfg: "ModelConfig") -> Backend:
    """A ready backend for one pyramid entry (local models load now; API keys are read now).

    Imports stay inside so that using only HTTP models never needs llama-cpp-python.
    """
    if cfg.backend == "llama_cpp":
        from .llama_local import LlamaBackend

        return LlamaBackend(
            cfg.name,
            cfg.gguf_path(),
            context_window=cfg.context_window,
            n_threads=cfg.n_threads,
            max_concurrency=cfg.max_concurrency or 1,
            timeout_s=cfg.timeout_s,
            embedding=cfg.embedding,
        )
    from .openai_http import OpenAIBackend

    return OpenAIBackend(
        cfg.name,
        cfg.endpoint or "",
        cfg.model or "",
        api_key=cfg.api_key(),
        context_window=cfg.context_window,
        max_concurrency=cfg.max_concurrency or 16,
        timeout_s=cfg.timeout_s,
    )
