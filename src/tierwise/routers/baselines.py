"""Reference routers that need no learning: random and per-model prior."""

from __future__ import annotations

import numpy as np

from .base import QualityModel, column_means, register


@register("random")
class RandomQuality(QualityModel):
    """Uniform noise: under any decision rule it sends a random share of traffic up the pyramid."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.m = 0

    def fit(self, X, Y):
        self.m = Y.shape[1]
        return self

    def predict(self, X):
        rng = np.random.default_rng(self.seed + len(X))
        return rng.random((len(X), self.m))

    def get_state(self):
        return {"seed": self.seed, "m": self.m}, {}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["seed"])
        obj.m = params["m"]
        return obj


@register("prior")
class PriorQuality(QualityModel):
    """Each model's average quality, ignoring the prompt (also the documented stand-in router)."""

    def __init__(self, means: np.ndarray | None = None):
        self.means = None if means is None else np.asarray(means, dtype=float)

    def fit(self, X, Y):
        self.means = column_means(Y)
        return self

    def predict(self, X):
        return np.tile(self.means, (len(X), 1))

    def get_state(self):
        return {}, {"means": self.means}

    @classmethod
    def from_state(cls, params, arrays):
        return cls(arrays["means"])


@register("heuristic")
class HeuristicQuality(QualityModel):
    """The untrained stand-in: difficulty from prompt length and number count only.

    Reads the surface features the featurizer appends (``tierwise.features.SURFACE_NAMES``);
    with the threshold rule at 0.5 easy prompts stay at the bottom of the pyramid, long or
    number-heavy ones climb. It is a placeholder until outcome data exists, not a learned router.
    """

    def __init__(self, m: int = 2):
        self.m = int(m)

    def fit(self, X, Y):
        self.m = Y.shape[1]
        return self

    def predict(self, X):
        from ..features import SURFACE_NAMES

        surf = np.asarray(X)[:, -len(SURFACE_NAMES):]
        log_words, log_numbers = surf[:, 1], surf[:, 2]
        difficulty = 0.7 * np.clip((log_words - np.log(30)) / (np.log(1000) - np.log(30)), 0, 1)
        difficulty += 0.3 * np.clip(log_numbers / np.log(20), 0, 1)
        rank = np.linspace(0.0, 1.0, self.m) if self.m > 1 else np.ones(1)
        return np.clip(1.0 - difficulty[:, None] * (1.2 - rank[None, :]), 0.0, 1.0)

    def get_state(self):
        return {"m": self.m}, {}

    @classmethod
    def from_state(cls, params, arrays):
        return cls(params["m"])
