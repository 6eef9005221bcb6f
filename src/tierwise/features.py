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


def _sample(text: str) -> tuple[str, float]:
    """The part of ``text`` every count reads, and the factor that scales its counts to the whole text."""
    if len(text) <= SAMPLE_CHARS:
        return text, 1.0
    sample = text[: SAMPLE_CHARS // 2] + "\n" + text[-SAMPLE_CHARS // 2:]
    return sample, len(text) / len(sample)


def _row(n_chars: int, sample: str, scale: float, words: int, numbers: int, digits: int) -> list[float]:
    return [
        log1p(n_chars),
        log1p(words * scale),
        log1p(numbers * scale),
        log1p(sample.count("\n") * scale),
        1.0 if ("```" in sample or "def " in sample or "{" in sample) else 0.0,
        log1p(sample.count("?") * scale),
        digits / max(len(sample), 1),
    ]


def surface_features(text: str) -> np.ndarray:
    sample, scale = _sample(text)
    return np.array(_row(len(text), sample, scale, *_counts(sample)), dtype=np.float32)


def surface_matrix(texts: Sequence[str]) -> np.ndarray:
    """(n, len(SURFACE_NAMES)) float32 surface statistics of many prompts: row i equals
    ``surface_features(texts[i])``. The samples are counted in one pass: their bytes joined with a NUL
    before each (no word or number run crosses one), the run starts summed per sample."""
    if not len(texts):
        return np.zeros((0, len(SURFACE_NAMES)), dtype=np.float32)
    if len(texts) == 1:
        return surface_features(texts[0])[None, :]
    samples = [_sample(t) for t in texts]
    encoded = [s.encode("utf-8", "surrogatepass") for s, _ in samples]
    b = b"\x00" + b"\x00".join(encoded)
    starts = np.zeros(len(encoded), dtype=np.int64)  # sample i's bytes begin at starts[i] + 1
    np.cumsum([len(e) + 1 for e in encoded[:-1]], out=starts[1:])
    w = np.frombuffer(b.translate(_WORD_CODE), dtype=np.int8)
    d = np.frombuffer(b.translate(_DIGIT_CODE), dtype=np.int8)
    digit = d == 2
    # column j of `marks` says something of byte j + 1: a word starts, a digit run starts, a separator
    # joins two digits, a digit; summed from each sample's first byte to the next one's NUL
    marks = np.zeros((len(b) - 1, 4), dtype=np.int32)
    marks[:, 0] = w[1:] > w[:-1]
    marks[:, 1] = digit[1:] > digit[:-1]
    marks[1:, 2] = (d[1:-1] == 1) & digit[:-2] & digit[2:]
    marks[:, 3] = digit[1:]
    sums = np.add.reduceat(marks, starts, axis=0).tolist()
    return np.array([_row(len(t), sample, scale, ws, rs - js, dg + js)
                     for t, (sample, scale), (ws, rs, js, dg) in zip(texts, samples, sums)], dtype=np.float32)


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
