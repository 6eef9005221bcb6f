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
        # costs must be finite and >= 0 (inf trained routers that printed Infinity)
        ("prompt,correct|a,correct|b,cost|a,cost|b\nhi,1,0,0.1,2\nyo,0,1,inf,2\n",
         "column 'cost|a': invalid cost inf for model 'a' in data row 2"),
        ("prompt,correct|a,correct|b,cost|a,cost|b\nhi,1,0,0.1,-inf\nyo,0,1,0.1,2\n",
         "column 'cost|b': invalid cost -inf for model 'b' in data row 1"),
        ("prompt,correct|a,correct|b,cost|a,cost|b\nhi,1,0,0.1,2\nyo,0,1,-1000,2\n",
         "column 'cost|a': invalid cost -1000 for model 'a' in data row 2"),
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


def test_token_counts_that_price_to_an_infinite_or_negative_cost_are_rejected(tmp_path):
    prices = write(tmp_path, "p.yaml", "models:\n  a: {input: 1.0, output: 2.0}\n  b: {input: 10, output: 20}\n")
    for i, value in enumerate(("inf", "-50")):
        p = write(tmp_path, f"t{i}.csv", f"prompt,correct|a,correct|b,tokens_out|b\nhi,1,0,10\nyo,0,1,{value}\n")
        with pytest.raises(TableError) as err:
            load_table(p, prices)
        msg = str(err.value)
        assert msg.startswith(str(p)) and "\n" not in msg
        assert f"column 'tokens_out|b': invalid length {value} for model 'b' in data row 2" in msg, msg


@pytest.mark.parametrize(
    "name,text,problem",
    [
        ("nan.yaml", "models:\n  foo: {input: .nan, output: 1}\n  bar: 1\n", "input price of 'foo' is nan"),
        ("nanstr.yaml", "models:\n  foo: {input: 1, output: nan}\n", "output price of 'foo' is 'nan'"),
        ("inf.yaml", "models:\n  foo: {input: 1, output: .inf}\n", "output price of 'foo' is inf"),
        ("neg.yaml", "models:\n  foo: {input: -1, output: 1}\n", "input price of 'foo' is -1"),
        ("short.yaml", "models:\n  foo: -5\n  bar: 1\n", "price of 'foo' is -5"),
        ("shortinf.yaml", "models:\n  foo: .inf\n", "price of 'foo' is inf"),
        ("p.csv", "model,input_per_1m,output_per_1m\nfoo,1,inf\nbar,1,1\n", "output price of 'foo' is 'inf'"),
        ("pn.csv", "model,input_per_1m,output_per_1m\nfoo,-2,1\n", "input price of 'foo' is '-2'"),
        ("out.yaml", "output_tokens: -1000\nmodels:\n  foo: 0.1\n", "output_tokens is -1000"),
        ("out0.yaml", "output_tokens: 0\nmodels:\n  foo: 0.1\n", "output_tokens is 0"),
        ("outnan.yaml", "output_tokens: .nan\nmodels:\n  foo: 0.1\n", "output_tokens is nan"),
    ],
)
def test_price_books_reject_nan_infinite_and_negative_values(tmp_path, name, text, problem):
    p = write(tmp_path, name, text)
    with pytest.raises(PriceError) as err:
        PriceBook.load(p)
    msg = str(err.value)
    assert msg.startswith(str(p) + ": ") and problem in msg and "\n" not in msg
    t = write(tmp_path, "t.csv", "prompt,correct|foo,correct|bar\nhi,1,0\n")
    with pytest.raises(PriceError):  # what `--prices` hands to every command
        load_table(t, p)


def test_zero_prices_and_whole_answer_lengths_still_load(tmp_path):
    book = PriceBook.load(write(tmp_path, "z.yaml", "output_tokens: 64\nmodels:\n  foo: 0\n  bar: {input: 0, output: 0.5}\n"))
    assert book.output_tokens == 64 and book.prices["foo"].input_per_1m == 0.0


GRADED = "prompt,correct|a,correct|b,correct|c,cost|a,cost|b,cost|c\n" + "".join(
    f"p{i},{i % 2},1,,0.1,0.2,0.3\n" for i in range(30))


def test_a_model_with_no_graded_rows_is_named_when_cleaned(tmp_path):
    """Failed collect cells are left empty; a model whose every cell failed cannot be learned or evaluated."""
    p = write(tmp_path, "t.csv", GRADED)
    t = load_table(p)  # loads: a probe table may leave a known model ungraded (onboarding handles that)
    for step in (t.clean, t.trainable):
        with pytest.raises(TableError) as err:
            step()
        msg = str(err.value)
        assert msg.startswith(str(p)) and "column 'correct|c' has no graded rows" in msg and "\n" not in msg
    assert len(t.with_models(["a", "b"]).clean()) == 30  # leaving it out works
    contaminated = write(tmp_path, "c.csv", GRADED.replace(",0.1,0.2,0.3\n", ",0.1,0.2,0.3,\n").replace(
        "cost|c\n", "cost|c,contaminated\n").replace("p0,0,1,,0.1,0.2,0.3,", "p0,0,1,1,0.1,0.2,0.3,true"))
    with pytest.raises(TableError, match="'correct|c' has no graded rows outside contaminated rows"):
        load_table(contaminated).trainable()


def test_train_on_a_model_with_no_graded_rows_fails_in_one_line(tmp_path):
    import subprocess
    import sys

    p = write(tmp_path, "t.csv", GRADED)
    r = subprocess.run([sys.executable, "-m", "tierwise.cli", "train", str(p), "--cv", "0", "--out",
                        str(tmp_path / "r.tw")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: {p}: column 'correct|c' has no graded rows" in r.stderr
    assert not (tmp_path / "r.tw").exists()


@pytest.mark.parametrize("name", ["bom.csv", "bom.csv.gz"])
def test_csv_with_a_byte_order_mark_loads(tmp_path, name):
    """Excel's "CSV UTF-8" starts with a BOM; the header's first column must still read `correct|a`."""
    text = "\ufeffcorrect|a,prompt,correct|b,cost|a,cost|b\n1,hé,0,0.1,2\n0,yo,1,0.1,2\n"
    p = tmp_path / name
    data = text.encode("utf-8")
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    t = load_table(p)
    assert t.models == ["a", "b"]
    assert t.prompts == ["hé", "yo"]
    assert t.correct.tolist() == [[1.0, 0.0], [0.0, 1.0]] and t.cost.tolist() == [[0.1, 2.0], [0.1, 2.0]]
