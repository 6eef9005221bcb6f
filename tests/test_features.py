"""Surface statistics: the byte-translation counts equal the regex definitions on ASCII text, long
prompts are sampled and scaled, and the featurizer's vector is the embedding plus them."""

from __future__ import annotations

import re
from math import log1p
from pathlib import Path

import numpy as np
import pytest

from tierwise.features import SAMPLE_CHARS, SURFACE_NAMES, Featurizer, _counts, surface_features, surface_matrix

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
EDGE = ["", "x", "5", "_", "1.2.3 a,b 1,,2 .5 5. ,5, 12.3,4", "3.14159 and 2,000,000.50 dollars", "a1b2 c_3 __ 9",
        "...,,,", "x=1;y==2 {\"k\": [1, 2.5]}", "end.", "version 1.2.3.4-rc5", "1..2 1,.2 1 . 2"]


def _regex_counts(text: str) -> tuple[int, int, int]:
    numbers = _NUMBER.findall(text)
    return len(_WORD.findall(text)), len(numbers), sum(map(len, numbers))


def test_counts_equal_the_regex_definitions_on_ascii_text():
    data = Path(__file__).resolve().parents[1] / "data" / "outcomes"
    from tierwise.table import load_table

    prompts = [p for p in load_table(data / "mmlu_pro.csv.gz").prompts[::3] if p.isascii()] + EDGE
    assert len(prompts) > 2000
    for p in prompts:
        assert _counts(p) == _regex_counts(p), p[:80]


def test_non_ascii_characters_count_as_letters():
    assert _counts("café naïve") == (2, 0, 0)
    assert _counts("日本語 text 42") == (3, 1, 2)


def test_long_prompts_are_sampled_and_scaled():
    text = "word 12?\n" * 2400  # 21,600 characters
    f = surface_features(text)
    names = dict(zip(SURFACE_NAMES, f.tolist()))
    assert names["log_chars"] == pytest.approx(log1p(len(text)))
    # 4,800 words, 2,400 numbers, lines and questions in all: counted in a 4,096-character sample, scaled
    assert np.expm1(names["log_words"]) == pytest.approx(4800, rel=0.01)
    for name in ("log_numbers", "log_lines", "log_questions"):
        assert np.expm1(names[name]) == pytest.approx(2400, rel=0.01), name
    assert len(text) > SAMPLE_CHARS and 0 < names["digit_frac"] < 1


def test_short_prompt_vector():
    f = dict(zip(SURFACE_NAMES, surface_features("What is 12 + 30?\n```py\nprint(42)\n```").tolist()))
    assert f["log_numbers"] == pytest.approx(log1p(3)) and f["log_lines"] == pytest.approx(log1p(3))
    assert f["has_code"] == 1.0 and f["log_questions"] == pytest.approx(log1p(1))
    assert surface_matrix([]).shape == (0, len(SURFACE_NAMES))


def test_featurizer_is_the_embedding_then_the_surface_statistics():
    fz = Featurizer()
    texts = ["a short question?", "def f(x):\n    return 2 * x"]
    X = fz.transform(texts)
    assert X.shape == (2, fz.dim) and X.dtype == np.float32
    assert np.array_equal(X[1], fz.transform_one(texts[1])[0])
    assert np.allclose(X[:, -len(SURFACE_NAMES):], surface_matrix(texts))


def test_surface_matrix_counts_many_prompts_in_one_pass_exactly_as_one_at_a_time():
    # the joined pass (one translation, run starts summed per sample) must give every row bit for bit
    rng = np.random.default_rng(0)
    alphabet = list("ab_Z19.,? \n\t{}`é€😀") + ["\x00", "def ", "```"]
    texts = EDGE + ["".join(rng.choice(alphabet, size=int(rng.integers(0, 80)))) for _ in range(400)]
    texts += ["7" * (SAMPLE_CHARS + 9), "1,000.5 x " * 900, "a\ud800b", "\x00\x00", "9\x009"]
    one_by_one = np.stack([surface_features(t) for t in texts])
    assert np.array_equal(surface_matrix(texts), one_by_one)
    assert np.array_equal(surface_matrix(texts[3:4]), one_by_one[3:4]) and surface_matrix([]).shape == (0, 7)
