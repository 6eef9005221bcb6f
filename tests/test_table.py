"""Outcome tables and price books: valid files load, bad files fail with one line naming the file."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from tierwise.prices import PriceBook, PriceError, size_from_name
from tierwise.table import TableError, load_table

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_text(text)
    return p


def test_loads_shipped_routellm_with_price_book():
    t = load_table(REPO / "data/outcomes/routellm.csv.gz")
    assert t.models == ["mixtral-8x7b", "gpt-4-1106"]
    assert len(t) == 15361 and t.contaminated.sum() > 0
    assert (t.cost[:, 1] > t.cost[:, 0]).all()  # GPT-4 is dearer on every prompt
    assert "price book" in t.cost_origin["gpt-4-1106"]


def test_cost_columns_are_used_as_given(tmp_path):
    p = write(tmp_path, "t.csv", "prompt,correct|a,correct|b,cost|a,cost|b\nhi,1,0,0.1,2\nyo,0,1,0.1,2\n")
    t = load_table(p)
    assert t.cost.tolist() == [[0.1, 2.0], [0.1, 2.0]]


def test_price_table_gives_token_based_cost(tmp_path):
    prices = write(tmp_path, "p.yaml", "output_tokens: 100\nmodels:\n  a: {input: 1.0, output: 2.0}\n  b: {input: 10, output: 20}\n")
    p = write(tmp_path, "t.csv", "prompt,correct|a,correct|b\n" + "abcd" * 10 + ",1,0\n")
    t = load_table(p, prices)
    # 40 chars ~ 10 tokens in, 100 out: (10*1 + 100*2)/1e6
    assert t.cost[0, 0] == pytest.approx(210e-6)
    assert t.cost[0, 1] == pytest.approx(2100e-6)
    csvp = write(tmp_path, "p.csv", "model,input_per_1m,output_per_1m\na,1,2\nb,10,20\n")
    assert load_table(p, csvp).cost[0, 1] > load_table(p, csvp).cost[0, 0]


@pytest.mark.parametrize(
    "text,problem",
    [
        ("question,correct|a\nhi,1\n", "missing required column 'prompt'"),
        ("prompt,source\nhi,x\n", "no model columns"),
        ("prompt,correct|a,correct|a\nhi,1,0\n", "duplicate model name 'a'"),
        ("prompt,correct|a,correct|b\nhi,1,yes\n", "non-numeric value 'yes'"),
        ("prompt,correct|a\nhi,3\n", "outcomes must lie in [0, 1]"),
        ("prompt,correct|a,cost|b\nhi,1,2\n", "name a model with no 'correct|' column"),
        ("prompt,correct|a,correct|b\n", "no rows"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path, text, problem):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(TableError) as err:
        load_table(p)
    msg = str(err.value)
    assert msg.startswith(str(p)) and problem in msg and "\n" not in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TableError, match="file not found"):
        load_table(tmp_path / "nope.csv")
    bad = tmp_path / "broken.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(TableError, match="cannot be read"):
        load_table(bad)


def test_unknown_model_without_price_fails_clearly(tmp_path):
    p = write(tmp_path, "t.csv", "prompt,correct|mystery-model\nhi,1\n")
    with pytest.raises(TableError, match="no cost for model 'mystery-model'"):
        load_table(p)


def test_size_fallback_and_bad_price_files(tmp_path):
    assert size_from_name("Meta-Llama-3-70B") == 70
    p = write(tmp_path, "t.csv", "prompt,correct|foo-7b,correct|foo-70b\nhi,1,0\n")
    t = load_table(p)
    assert t.cost[0, 1] > t.cost[0, 0] and "estimated" in t.cost_origin["foo-7b"]
    with pytest.raises(PriceError, match="needs 'input' and 'output'"):
        PriceBook.load(write(tmp_path, "bad.yaml", "models:\n  a: {input: 1}\n"))
    with pytest.raises(PriceError, match="not a number"):
        PriceBook.load(write(tmp_path, "bad2.yaml", "models:\n  a: {input: x, output: 1}\n"))


def test_selection_helpers():
    t = load_table(REPO / "data/outcomes/llmrouter_dc.csv.gz")
    sub = t.with_source("llmrouter_dcrouter/test").with_models(["gemma-2-9b-it", "qwen2.5-7b-instruct"])
    assert len(sub) == 500 and sub.models == ["gemma-2-9b-it", "qwen2.5-7b-instruct"]
    with pytest.raises(TableError, match="unknown model"):
        t.with_models(["nope"])
    with pytest.raises(TableError, match="no row has a source"):
        t.with_source("nothing/")
    assert np.isfinite(t.clean().correct).all()
