"""Helpers shared by the gateway tests (``test_server.py``, ``test_server_cascade.py``).

The decision-log readers live in ``tierwise.testing`` (with the stub backend and the gateway
runner); they are re-exported here for the tests that import them from ``_helpers``.
"""

from __future__ import annotations

from pathlib import Path

from tierwise.testing import log_row, log_rows

__all__ = ["log_row", "log_rows", "prices_of", "embedded_or_skip"]


def prices_of(cfg: Path) -> dict[str, tuple[float, float]]:
    """Each model's (input, output) price per 1M tokens in the pyramid YAML ``cfg``."""
    from tierwise.config import Pyramid

    return {m.name: (m.input_per_1m, m.output_per_1m) for m in Pyramid.load(cfg).models}


def embedded_or_skip(model_id: str) -> Path:
    """The GGUF of an embedded model; the test is skipped when llama-cpp-python or the weights are missing."""
    import pytest

    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'tierwise[local]')")
    from tierwise.weights import WeightsError, model_path

    try:
        return model_path(model_id)
    except WeightsError as exc:
        pytest.skip(f"{model_id} weights not installed: {exc}")
