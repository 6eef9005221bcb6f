"""Prompt features for routers: a static embedding plus a few surface statistics.

The embedding says *what* a prompt is about; the surface statistics (length, how many numbers,
lines, code) say *how hard* it looks, which topic alone misses (a long multi-step word problem
versus a one-liner on the same subject). Every count reads at most ``SAMPLE_CHARS`` of a prompt (its
head and tail; counts are scaled to the prompt's length), so their cost is bounded like the embedding's.
"""

from __future__ import annotations

from math import log1p
from typing import Sequence

import numpy as np

SURFACE_NAMES = ("log_chars", "log_words", "log_numbers", "log_lines", "has_code", "log_questions", "digit_frac")
SAMPLE_CHARS = 4096  # every count of a longer prompt is taken in its head and tail, and scaled

# Counting without match objects: the sample's UTF-8 bytes are translated (C speed) to small codes and
# runs are counted with a few vectorised comparisons. A *word* is a run of letters, digits and "_"
# (any non-ASCII character counts as a letter: on ASCII text this is exactly regex ``\w+``); a *number*
# a run of ASCII digits, runs joined by a single "." or "," ("1,000.5" is one number of 7 characters):
# on ASCII text exactly regex ``\d+(?:[.,]\d+)*``.
_WORD_CODE = bytes(1 if (chr(i).isalnum() or i == 0x5F or i >= 0x80) else 0 for i in range(256))
_DIGIT_CODE = bytes(2 if 0x30 <= i <= 0x39 else 1 if i in (0x2C, 0x2E) else 0 for i in range(256))


def _counts(sample: str) -> tuple[int, int, int]:
    """(words, numbers, characters inside numbers) of ``sample``."""
    b = sample.encode("utf-8", "surrogatepass")
    w = np.frombuffer(b.translate(_WORD_CODE), dtype=np.int8)
    words = int(np.count_nonzero(w[1:] > w[:-1])) + int(w[:1].sum())  # run starts
    d = np.frombuffer(b.translate(_DIGIT_CODE), dtype=np.int8)  # 2 digit, 1 "." or ",", 0 anything else
    digit = d == 2
    runs = int(np.count_nonzero(digit[1:] > digit[:-1])) + int(digit[:1].sum())
    joins = int(np.count_nonzero((d[1:-1] == 1) & digit[:-2] & digit[2:]))  # digit, separator, digit
    return words, runs - joins, int(np.count_nonzero(digit)) + joins


def surface_features(text: str) -> np.ndarray:
    n_chars = len(text)
    if n_chars <= SAMPLE_CHARS:
        sample, scale = text, 1.0
    else:
        sample = text[: SAMPLE_CHARS // 2] + "\n" + text[-SAMPLE_CHARS // 2:]
        scale = n_chars / len(sample)
    words, numbers, digits = _counts(sample)
    return np.array(
        [
            log1p(n_chars),
            log1p(words * scale),
            log1p(numbers * scale),
            log1p(sample.count("\n") * scale),
            1.0 if ("```" in sample or "def " in sample or "{" in sample) else 0.0,
            log1p(sample.count("?") * scale),
            digits / max(len(sample), 1),
        ],
        dtype=np.float32,
    )


def surface_matrix(texts: Sequence[str]) -> np.ndarray:
    """(n, len(SURFACE_NAMES)) float32 surface statistics of many prompts."""
    if not len(texts):
        return np.zeros((0, len(SURFACE_NAMES)), dtype=np.float32)
    return np.stack([surface_features(t) for t in texts])


class Featurizer:
    """Turns prompt text into the feature vector every learned router consumes."""

    def __init__(self, encoder=None, surface: bool = True):
        if encoder is None:
            from .encoder import default_encoder

            encoder = default_encoder()
        self.encoder = encoder
        self.surface = surface

    @property
    def dim(self) -> int:
        return self.encoder.dim + (len(SURFACE_NAMES) if self.surface else 0)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.encoder.encode(list(texts))
        if not self.surface:
            return emb
        return np.hstack([emb, surface_matrix(texts)]).astype(np.float32)

    def transform_one(self, text: str) -> np.ndarray:
        emb = self.encoder.encode_one(text)
        if not self.surface:
            return emb[None, :]
        return np.concatenate([emb, surface_features(text)])[None, :]  # both float32

    def describe(self) -> dict:
        return {"encoder": self.encoder.name, "encoder_fingerprint": self.encoder.fingerprint(), "surface": self.surface}


def featurizer_for(description: dict) -> Featurizer | None:
    """The featurizer a router artifact was built with (``Featurizer.describe()``), when its encoder is a
    view of the shipped one; None otherwise (the default featurizer, and the fingerprint check decides)."""
    from .encoder import StaticEncoder, shipped_encoder

    name = description.get("encoder")
    if not name or name not in StaticEncoder.views():
        return None
    return Featurizer(shipped_encoder(name), surface=bool(description.get("surface", True)))


class SurfaceFeaturizer:
    """Surface statistics only, for the untrained stand-in: it never loads or runs the encoder."""

    surface = True
    dim = len(SURFACE_NAMES)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return surface_matrix(texts)

    def transform_one(self, text: str) -> np.ndarray:
        return surface_features(text)[None, :]

    def describe(self) -> dict:
        return {"encoder": None, "encoder_fingerprint": None, "surface": True}
