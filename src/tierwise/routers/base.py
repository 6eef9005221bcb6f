"""The quality-model interface and registry (scikit-learn style fit / predict)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

QUALITY_MODELS: dict[str, type["QualityModel"]] = {}


def register(kind: str):
    def wrap(cls):
        cls.kind = kind
        QUALITY_MODELS[kind] = cls
        return cls

    return wrap


def make_quality_model(kind: str, **params: Any) -> "QualityModel":
    if kind not in QUALITY_MODELS:
        raise ValueError(f"unknown router kind {kind!r}; choose one of {sorted(QUALITY_MODELS)}")
    return QUALITY_MODELS[kind](**params)


class QualityModel(ABC):
    """Predicts P(model answers well | prompt features) for every model at once."""

    kind: str = ""
    uses_groups = False  # fit() also takes ``groups``: each row's ``source`` (see :func:`fit_quality`)

    @abstractmethod
    def fit(self, X: np.ndarray, Y: np.ndarray) -> "QualityModel":
        """``X``: (n, d) features; ``Y``: (n, m) outcomes in [0, 1], NaN where not evaluated."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, m) predicted quality in [0, 1]."""

    @abstractmethod
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able parameters and named arrays: artifacts never pickle code."""

    @classmethod
    @abstractmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "QualityModel": ...

    @classmethod
    def usable(cls, groups, **params) -> bool:
        """Whether fitting on rows with these ``source`` labels is worth it (an ensemble leaves out a member
        that is not)."""
        return True


def column_means(Y: np.ndarray) -> np.ndarray:
    """Per-model mean outcome ignoring missing cells (0.5 for a model with no data)."""
    with np.errstate(invalid="ignore"):
        m = np.nanmean(Y, axis=0) if np.isfinite(Y).any() else np.full(Y.shape[1], 0.5)
    return np.where(np.isnan(m), 0.5, m)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (all-zero rows stay zero)."""
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-8)


def fit_quality(model: "QualityModel", X: np.ndarray, Y: np.ndarray, groups=None) -> "QualityModel":
    """``model.fit(X, Y)``, with each row's ``source`` label (``groups``) for the models that use one."""
    return model.fit(X, Y, groups=groups) if model.uses_groups else model.fit(X, Y)
