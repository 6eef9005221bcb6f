"""Static encoder: shape, normalisation, determinism, fingerprint, asset errors, no torch on the hot path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tierwise.encoder import ASSET_DIR, EncoderAssetError, StaticEncoder, default_encoder, shipped_encoder

PROMPTS = [
    "What is the capital of France?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Which of the following is a function of the kidney? A. filtration B. digestion C. respiration D. vision",
    "Écris une fonction Python qui inverse une chaîne — 日本語のテキストも大丈夫？ 🚀",
]


@pytest.fixture(scope="module")
def enc() -> StaticEncoder:
    return default_encoder()


def test_shape_dtype_and_unit_rows(enc):
    x = enc.encode(PROMPTS)
    assert x.shape == (len(PROMPTS), enc.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    meta = json.loads((ASSET_DIR / "encoder.json").read_text())
    assert enc.dim == meta["views"][meta["default_view"]]["dims"]


def test_encode_one_matches_batch_and_is_deterministic(enc):
    x = enc.encode(PROMPTS + PROMPTS[:1])
    for i, p in enumerate(PROMPTS):
        v = enc.encode_one(p)
        assert v.shape == (enc.dim,) and v.dtype == np.float32
        assert np.array_equal(v, x[i])
    assert np.array_equal(x[0], x[-1])  # identical text -> identical vector
    assert np.array_equal(enc.encode(PROMPTS), x[: len(PROMPTS)])


def test_pooling_is_the_normalised_sum_of_token_rows(enc):
    # short prompts gather every row; long ones each distinct token's row times its count: both the plain sum
    for text in (PROMPTS[1], " ".join(PROMPTS * 20)):
        ids = enc._ids(enc._clip_text(text))
        v = enc._emb[ids].astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(enc.encode_one(text), v / np.linalg.norm(v), atol=2e-6)


def test_similar_prompts_closer_than_unrelated(enc):
    a, b, c = enc.encode([
        "How many apples does John have left after giving away three?",
        "How many oranges does Mary have after she gives two away?",
        "Which amendment to the US constitution abolished slavery?",
    ])
    assert a @ b > a @ c + 0.1


def test_empty_and_non_ascii(enc):
    x = enc.encode(["", "   ", "🙂🙂", "naïve café Ελληνικά"])
    assert not x[:3].any()  # no known token -> zero row
    assert abs(np.linalg.norm(x[3]) - 1) < 1e-5
    assert not enc.encode_one("").any()
    assert enc.encode([]).shape == (0, enc.dim)
    assert enc.count_tokens("") == 0
    with pytest.raises(TypeError):
        enc.encode("not a list")
    with pytest.raises(TypeError):
        enc.encode_one(None)  # type: ignore[arg-type]


def test_long_prompt_keeps_head_and_tail(enc):
    words = [f"word{i % 97}" for i in range(6000)]
    long_text = "Question: " + " ".join(words) + " Answer with the capital of France."
    assert enc.count_tokens(long_text) > 4000
    v = enc.encode_one(long_text)
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    # the tail is used: changing only the last sentence changes the vector
    w = enc.encode_one(long_text.replace("capital of France", "boiling point of nitrogen"))
    assert not np.allclose(v, w)
    # the middle is not: changing a word far from both ends leaves it unchanged
    k = long_text.index(" word50 ", len(long_text) // 2)
    mid = long_text[:k] + " zebra " + long_text[k + len(" word50 "):]
    assert np.array_equal(enc.encode_one(mid), v)


def test_count_tokens_counts_the_whole_text(enc):
    assert enc.count_tokens("hello world") == 2
    assert enc.count_tokens("hello " * 3000) == 3000


def test_fingerprint_stable_and_sensitive(enc, tmp_path):
    fp = enc.fingerprint()
    assert len(fp) == 16 and fp == StaticEncoder.load().fingerprint() == StaticEncoder.load(ASSET_DIR).fingerprint()
    copy = tmp_path / "enc"
    shutil.copytree(ASSET_DIR, copy)
    tok = json.loads((copy / "tokenizer.json").read_text())
    tok["normalizer"] = None  # a different tokenizer must give a different fingerprint
    (copy / "tokenizer.json").write_text(json.dumps(tok))
    assert StaticEncoder.load(copy).fingerprint() != fp


def test_missing_and_corrupt_asset_name_the_file(tmp_path):
    with pytest.raises(EncoderAssetError, match="not found"):
        StaticEncoder.load(tmp_path / "nowhere")
    copy = tmp_path / "enc"
    shutil.copytree(ASSET_DIR, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(EncoderAssetError, match=r"tokenizer\.json: missing"):
        StaticEncoder.load(copy)
    shutil.copy(ASSET_DIR / "tokenizer.json", copy / "tokenizer.json")

    w = copy / "embeddings.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(EncoderAssetError, match=r"embeddings\.safetensors: SHA-256 does not match"):
        StaticEncoder.load(copy)
    w.write_bytes(b"garbage")  # and without a recorded hash: the parse error still names the file
    meta = json.loads((copy / "encoder.json").read_text())
    meta.pop("weights_sha256")
    (copy / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(EncoderAssetError, match=r"embeddings\.safetensors: unreadable"):
        StaticEncoder.load(copy)

    shutil.copy(ASSET_DIR / "embeddings.safetensors", w)
    (copy / "tokenizer.json").write_text("{not json")
    with pytest.raises(EncoderAssetError, match=r"tokenizer\.json: unreadable"):
        StaticEncoder.load(copy)
    (copy / "encoder.json").write_text("[1, 2")
    with pytest.raises(EncoderAssetError, match=r"encoder\.json: not valid JSON"):
        StaticEncoder.load(copy)


def test_views_of_the_table(enc):
    meta = json.loads((ASSET_DIR / "encoder.json").read_text())
    table, *views = StaticEncoder.views()
    assert table == meta["name"] and enc.name == meta["default_view"] in views
    full = shipped_encoder(table)
    assert full.dim == meta["dims"] and enc.dim == meta["views"][enc.name]["dims"] < full.dim
    assert shipped_encoder(enc.name) is enc is shipped_encoder(None)  # one object (one memo) per view
    assert full.fingerprint() != enc.fingerprint() and enc.meta["view_of"] == table
    # a view's vector is the normalised projection of the table's pooled sum
    from safetensors.numpy import load_file

    P = load_file(str(ASSET_DIR / "views.safetensors"))[enc.name].astype(np.float64)
    for text in PROMPTS + [" ".join(PROMPTS * 20)]:
        ids = full._ids(full._clip_text(text))
        v = full._emb[ids].astype(np.float64).sum(axis=0) @ P
        np.testing.assert_allclose(enc.encode_one(text), v / np.linalg.norm(v), atol=2e-6)


def test_damaged_or_unknown_view_names_the_file(tmp_path):
    copy = tmp_path / "enc"
    shutil.copytree(ASSET_DIR, copy)
    with pytest.raises(EncoderAssetError, match=r"encoder\.json: no encoder view 'nope' \(this asset has: "):
        StaticEncoder.load(copy, "nope")
    v = copy / "views.safetensors"
    data = bytearray(v.read_bytes())
    data[-5] ^= 0xFF
    v.write_bytes(bytes(data))
    with pytest.raises(EncoderAssetError, match=r"views\.safetensors: SHA-256 does not match"):
        StaticEncoder.load(copy)
    assert StaticEncoder.load(copy, StaticEncoder.views()[0]).dim == 256  # the table itself needs no view file
    v.unlink()
    with pytest.raises(EncoderAssetError, match=r"views\.safetensors: missing file"):
        StaticEncoder.load(copy)


def test_hot_path_does_not_import_torch_or_model2vec():
    code = (
        "import sys, tierwise.encoder as e; v = e.default_encoder().encode_one('x'); "
        "assert v.shape == (e.default_encoder().dim,); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'model2vec', 'transformers', "
        "'sentence_transformers'}); print(bad); sys.exit(1 if bad else 0)"
    )
    import tierwise

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(tierwise.__file__).resolve().parents[1])] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).parent, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fast_path_gives_the_tokenizers_ids_on_every_shipped_prompt(enc):
    """The memoised chunk path must be an exact stand-in for ``tokenizers``, never an approximation."""
    from tierwise.table import load_table

    data = Path(__file__).resolve().parents[1] / "data" / "outcomes"
    prompts = [p for name in ("routellm.csv.gz", "mmlu_pro.csv.gz", "llmrouter_dc.csv.gz")
               for p in load_table(data / name).prompts[::2]]
    prompts += ["[MASK] is a token", "tab\tand\x0bvertical", "under_score snake_case x=1;y==2", "ÉCOLE café", "a" * 150,
                "日本語のテキスト mixed with English", "naïve  double  spaces ", "a\u00a0b non-breaking", "x\u2028y",
                "“curly quotes” — dashes… and emoji 🚀!", "[CLS][SEP] joined", "\x00null\x1funit sep",
                "lines\nand\r\nreturns\tand tabs\n\n  indented", "\nleading and trailing whitespace\t\n",
                "“multi-line”\nnon-ASCII — text\r\nwith\ttabs\n\n  and é", "ctrl\x0b\nand\x1f\tnewline ü\n"]
    assert enc._fast_ascii and sum(p.isascii() for p in prompts) > 1000 and sum(not p.isascii() for p in prompts) > 50
    for p in prompts:
        assert enc._token_ids(p).tolist() == enc._tok.encode(p, add_special_tokens=False).ids, p[:80]
    # non-ASCII text is cut at newlines and tabs too: a multi-line prompt's lines do not fuse into chunks
    # seen for the first time (each one a call into ``tokenizers``)
    assert not any(c in chunk for chunk in enc._chunk_ids for c in "\n\t\r")


def test_lone_surrogates_encode_as_replacement_characters(enc):
    """Undecodable argv bytes reach Python as lone surrogates (surrogateescape); ``tokenizers`` refuses them
    ("TextInputSequence must be str"), so they are encoded as the U+FFFD a lossy decode would give."""
    pairs = [("bad \ud800 x", "bad \ufffd x"), ("\udcff\udcfe", "\ufffd\ufffd"), ("caf\udce9 au lait", "caf\ufffd au lait"),
             ("naïve\udcff résumé\nline two", "naïve\ufffd résumé\nline two")]
    for bad, good in pairs:
        assert enc._token_ids(bad).tolist() == enc._tok.encode(good, add_special_tokens=False).ids
        np.testing.assert_array_equal(enc.encode_one(bad), enc.encode_one(good))
        assert enc.count_tokens(bad) == enc.count_tokens(good)
    np.testing.assert_array_equal(enc.encode([p for p, _ in pairs]), enc.encode([q for _, q in pairs]))
    slow = StaticEncoder(enc._tok, enc._emb, enc.meta, enc.fingerprint())  # a tokenizer off the fast path
    slow._fast_ascii = False
    assert slow._token_ids("caf\udce9 au lait").tolist() == enc._tok.encode("caf\ufffd au lait",
                                                                              add_special_tokens=False).ids


def test_router_and_cli_route_text_with_undecodable_bytes(tmp_path):
    from tierwise.config import default_router_path
    from tierwise.router import Router

    router = Router.load(default_router_path())
    assert router.route("bad \ud800 x").model == router.route("bad \ufffd x").model
    r = subprocess.run([sys.executable, "-m", "tierwise.cli", "route", str(default_router_path()), b"\xff\xfe"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(os.environ, LC_ALL="C.UTF-8", PYTHONUTF8="1"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["model"] in router.models
