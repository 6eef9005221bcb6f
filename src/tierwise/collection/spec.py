"""The pyramid as ``collect`` sees it: each chat model's name, identity, prices and how to build it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..backends.base import Backend
from ..errors import TierwiseError

if TYPE_CHECKING:
    from ..config import ModelConfig, Pyramid


class CollectError(TierwiseError, RuntimeError):
    """Collection cannot start or finish; the message names the file, model or field."""


@dataclass
class ModelSpec:
    """What collect needs from a pyramid model; built from ``tierwise.config.ModelConfig``.

    ``config`` (when the spec comes from a pyramid) lets a Ray worker rebuild the backend with its
    own thread count and tells the Ray runner whether the model is local (reserve CPUs) or HTTP.
    """

    name: str
    identity: str  # changes when the weights/endpoint change, so stale cells are not reused
    input_per_1m: float
    output_per_1m: float
    max_concurrency: int = 1
    factory: Callable[[], Backend] | None = None
    config: "ModelConfig | None" = None

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        from ..prices import token_cost

        return token_cost(tokens_in, tokens_out, self.input_per_1m, self.output_per_1m)

    @property
    def is_local(self) -> bool:
        """An in-process model (llama.cpp): it needs CPUs where it runs, not just a network."""
        return self.config is not None and self.config.backend == "llama_cpp"

    def build(self, n_threads: int | None = None) -> Backend:
        """A ready backend; ``n_threads`` overrides a local model's thread count (Ray workers)."""
        if self.config is not None:
            from ..backends import build_backend

            cfg = self.config
            if n_threads is not None and cfg.backend == "llama_cpp":
                cfg = cfg.model_copy(update={"n_threads": int(n_threads)})
            return build_backend(cfg)
        if self.factory is None:
            raise CollectError(f"model {self.name!r} has no backend")
        return self.factory()


def model_identity(cfg: "ModelConfig") -> str:
    """A string that changes when the model behind a name changes (weights hash, file, or endpoint)."""
    if getattr(cfg, "backend", None) == "llama_cpp":
        if cfg.embedded:
            from ..weights import get

            return f"embedded:{cfg.embedded}:{get(cfg.embedded).sha256[:16]}"
        st = Path(cfg.path).stat()
        return f"gguf:{Path(cfg.path).name}:{st.st_size}"
    return f"openai:{cfg.endpoint}:{cfg.model}"


def specs_from_pyramid(pyramid: "Pyramid", concurrency: int | None = None) -> list[ModelSpec]:
    """One spec per chat model, cheapest first (embedding models answer no prompts)."""
    return [
        ModelSpec(
            name=cfg.name,
            identity=model_identity(cfg),
            input_per_1m=cfg.input_per_1m,
            output_per_1m=cfg.output_per_1m,
            max_concurrency=concurrency or cfg.max_concurrency or 1,
            config=cfg,
        )
        for cfg in pyramid.chat_models
    ]
