"""Static prompt encoder for the routing fast path.

Routers need a prompt embedding in well under a millisecond, on a CPU, with no model hub and no
torch. A *static* encoder gives that: every token has one precomputed vector (distilled once from
sentence-transformers/all-MiniLM-L6-v2 with model2vec, see ``scripts/build_encoder.py``), and a
prompt's embedding is the L2-normalised sum of its token vectors. Encoding is a tokenizer call plus
a gather-and-sum in numpy. Measurements and the rebuild recipe are in ``docs/encoder.md``.

The asset directory holds ``tokenizer.json``, ``embeddings.safetensors`` (one ``embeddings``
tensor, vocab x dim, float16), ``encoder.json`` (name, dims, provenance, SHA-256 of the weights) and
optionally ``views.safetensors``: *views* of the same table in fewer dimensions (a dim x d projection
onto the table's top principal directions per view, named in ``encoder.json``'s ``views``). A view is
an encoder of its own (name, fingerprint); ``default_view`` is what new routers use, and every view
stays loadable, so a router trained on another one keeps working (``Router.load`` picks it by name).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TierwiseError

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "encoder"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "embeddings.safetensors"
META_FILE = "encoder.json"
VIEWS_FILE = "views.safetensors"
WEIGHTS_KEY = "embeddings"

# Long prompts: only the first HEAD_TOKENS and last TAIL_TOKENS tokens are embedded (instructions
# sit at the start, the actual question often at the end). Text is pre-cut by characters so a
# 50k-character prompt never reaches the tokenizer whole; CHARS_PER_TOKEN over-provisions so the
# token caps, not the character cut, normally decide. Chosen by measurement (docs/encoder.md).
HEAD_TOKENS = 512
TAIL_TOKENS = 128
CHARS_PER_TOKEN = 6

# Fast path under a BERT-style uncased WordPiece tokenizer: text is cut at ASCII spaces and each
# chunk's ids are memoised. A new plain-ASCII chunk is lower-cased and split into runs of
# letters/digits and single punctuation marks (what BertPreTokenizer does on ASCII); any other
# chunk (non-ASCII, control characters, literal special tokens) goes through ``tokenizers``. ~10x
# faster than a full ``Tokenizer.encode`` per prompt (which also builds offsets and an Encoding
# object) with identical ids (tested on every shipped prompt).
_ASCII_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# lone surrogates (what Python makes of undecodable bytes, e.g. argv via surrogateescape) cannot cross
# into ``tokenizers`` (Rust strings are UTF-8): each becomes U+FFFD, as a lossy UTF-8 decode would give
_SURROGATE = re.compile("[\ud800-\udfff]")
_DEDUP_FROM = 64  # tokens: below this a plain gather-and-sum is cheaper than sorting
_CHUNK_MEMO_MAX = 100_000  # chunks per generation of the memo (~10 MB each, two generations at most)


class EncoderAssetError(TierwiseError, RuntimeError):
    """The encoder asset is missing or damaged; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StaticEncoder:
    """Token-vector lookup encoder: ``encode`` returns (n, dim) float32 rows of unit length.

    Text that yields no known token (the empty string, only whitespace or only unknown symbols)
    maps to the all-zero vector: there is nothing to say about it, and a zero row is neutral for
    dot-product kNN and linear models.
    """

    name: str
    dim: int

    def __init__(self, tokenizer, embeddings: np.ndarray, meta: dict, fingerprint: str,
                 head_tokens: int = HEAD_TOKENS, tail_tokens: int = TAIL_TOKENS):
        self._tok = tokenizer
        self._tok.no_truncation()
        self._tok.no_padding()
        # float32 in memory: gathering float16 rows and summing them is ~3x slower in numpy.
        self._emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.meta = dict(meta)
        self.name = _table_name(meta)
        self.dim = int(self._emb.shape[1])
        self._fingerprint = fingerprint
        unk = meta.get("unk_token")
        self._unk = tokenizer.token_to_id(unk) if unk else None
        self.head_tokens = int(head_tokens)
        self.tail_tokens = int(tail_tokens)
        self._fast_ascii = _is_uncased_bert_wordpiece(tokenizer)
        # the chunk memo in two generations: when the young one is full it becomes the old one (and the
        # old one is dropped); a chunk found in the old one moves back. Recently used chunks survive
        # (an approximate LRU at the cost of one dict lookup per hit), memory stays bounded.
        self._chunk_ids: dict[str, bytes] = {}
        self._chunk_old: dict[str, bytes] = {}
        # literal added tokens ("[CLS]", "[MASK]", ...) are split out whole by the tokenizer: slow path
        self._added = tuple(t.content for t in tokenizer.get_added_tokens_decoder().values())
        self._head_chars = self.head_tokens * CHARS_PER_TOKEN
        self._tail_chars = self.tail_tokens * CHARS_PER_TOKEN

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path | None = None, view: str | None = None) -> "StaticEncoder":
        """Load an asset directory (``None``: the one shipped in the package), verifying its hashes.

        ``view``: the table itself (its ``name``) or one of its ``views``; default ``default_view``
        when the asset names one, else the table."""
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load
        from tokenizers import Tokenizer

        root = Path(path) if path is not None else ASSET_DIR
        if not root.is_dir():
            raise EncoderAssetError(root, "encoder asset directory not found")
        meta_path, tok_path, w_path = root / META_FILE, root / TOKENIZER_FILE, root / WEIGHTS_FILE
        for p in (meta_path, tok_path, w_path):
            if not p.is_file():
                raise EncoderAssetError(p, "missing file of the encoder asset (rebuild: scripts/build_encoder.py)")
        meta = _read_meta(root)
        w_bytes = w_path.read_bytes()
        expected = meta.get("weights_sha256")
        if expected and _sha256(w_bytes) != expected:
            raise EncoderAssetError(w_path, "SHA-256 does not match encoder.json: the file is corrupt or was replaced")
        try:
            tensors = st_load(w_bytes)
        except (SafetensorError, ValueError, OSError) as exc:
            raise EncoderAssetError(w_path, f"unreadable safetensors file ({exc})") from None
        emb = tensors.get(WEIGHTS_KEY)
        if emb is None or emb.ndim != 2 or emb.shape[0] == 0:
            raise EncoderAssetError(w_path, f"expected a 2-D tensor named {WEIGHTS_KEY!r}")
        if "dims" in meta and int(meta["dims"]) != emb.shape[1]:
            raise EncoderAssetError(w_path, f"has {emb.shape[1]} dims but encoder.json says {meta['dims']}")
        if not np.isfinite(emb).all():
            raise EncoderAssetError(w_path, "embeddings contain NaN or infinity")

        tok_bytes = tok_path.read_bytes()
        try:
            tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise EncoderAssetError(tok_path, f"unreadable tokenizer ({str(exc).splitlines()[0][:120]})") from None
        if tokenizer.get_vocab_size() != emb.shape[0]:
            raise EncoderAssetError(
                tok_path, f"vocabulary has {tokenizer.get_vocab_size()} tokens but the embeddings have {emb.shape[0]} rows"
            )
        fingerprint = _sha256(_sha256(w_bytes).encode() + _sha256(tok_bytes).encode())[:16]
        base = _table_name(meta)
        view = meta.get("default_view", base) if view is None else view
        if view != base:
            P, p_sha = _view_projection(root, meta, view, emb.shape[1])
            # in float64, then rounded: the same float32 table whatever BLAS does the product (in blocks of
            # rows: a float64 copy of the whole table would double the load's peak memory)
            P64 = P.astype(np.float64)
            emb = np.concatenate([(np.asarray(emb[i:i + 4096], dtype=np.float64) @ P64).astype(np.float32)
                                  for i in range(0, len(emb), 4096)])
            fingerprint = _sha256((fingerprint + p_sha).encode())[:16]
            meta = {**meta, "name": view, "dims": int(P.shape[1]), "view_of": base}
        return cls(tokenizer, emb, meta, fingerprint)

    @staticmethod
    def views(path: str | Path | None = None) -> list[str]:
        """Names this asset can load as (the table first, then its views)."""
        try:
            meta = _read_meta(Path(path) if path is not None else ASSET_DIR)
        except (OSError, EncoderAssetError):
            return []
        return [_table_name(meta)] + [str(v) for v in meta.get("views") or {}]

    # ---------------------------------------------------------------- encoding
    def _clip_text(self, text: str) -> list[str]:
        """Pieces to tokenize: the whole text, or its head and tail when it is very long."""
        if len(text) <= self._head_chars + self._tail_chars:
            return [text]
        cut = text.rfind(" ", 0, self._head_chars)  # cut at whitespace so no word is split
        head = text[: cut if cut > self._head_chars // 2 else self._head_chars]
        start = len(text) - self._tail_chars
        nxt = text.find(" ", start)
        tail = text[nxt if 0 <= nxt < start + self._tail_chars // 2 else start:]
        return [head, tail]

    def _token_ids(self, piece: str) -> np.ndarray:
        """Token ids (int32) of ``piece``, exactly as ``tokenizers`` gives them, memoised per chunk.

        BERT normalisation and pre-tokenisation never look across whitespace, so each chunk
        tokenises the same alone as in context; a chunk is computed once (plain ASCII by the
        lower-case/split rule, anything else by ``tokenizers`` itself) and then looked up, stored as
        packed int32 bytes so a prompt's ids are one ``bytes.join``. Plain ASCII text is cut at every
        whitespace character (what BERT treats as whitespace there); other text at ASCII spaces, tabs,
        newlines and carriage returns, which BERT's normaliser turns into spaces (Python's and BERT's
        ideas of other Unicode whitespace differ): a multi-line prompt with one non-ASCII character is
        otherwise cut only at spaces, and every "word\nword" is a chunk seen for the first time.
        """
        if not self._fast_ascii:
            return np.asarray(self._encode_ids(piece), dtype=np.int32)
        memo = self._chunk_ids
        if len(memo) > _CHUNK_MEMO_MAX:
            self._chunk_old, self._chunk_ids = memo, {}
            memo = self._chunk_ids
        if piece.isascii() and not _ASCII_CONTROL.search(piece):
            chunks = piece.split()
        else:
            chunks = piece.replace("\n", " ").replace("\t", " ").replace("\r", " ").split(" ")
        parts = list(map(memo.get, chunks))
        try:
            return np.frombuffer(b"".join(parts), dtype=np.int32)
        except TypeError:  # chunks not in the young generation (None): from the old one, or tokenised now
            pass
        old = self._chunk_old
        for i, ids in enumerate(parts):
            if ids is None:
                chunk = chunks[i]
                ids = old.get(chunk)
                if ids is None:
                    ids = np.asarray(self._chunk_token_ids(chunk), dtype=np.int32).tobytes()
                parts[i] = memo[chunk] = ids
        return np.frombuffer(b"".join(parts), dtype=np.int32)

    def clear_memo(self) -> None:
        """Forget every memoised chunk (benchmarks time a cold tokenizer with it)."""
        self._chunk_ids, self._chunk_old = {}, {}

    def _chunk_token_ids(self, chunk: str) -> list[int]:
        if chunk.isascii() and not _ASCII_CONTROL.search(chunk) and not any(a in chunk for a in self._added):
            model = self._tok.model
            return [t.id for word in _ASCII_WORD.findall(chunk.lower()) for t in model.tokenize(word)]
        return self._encode_ids(chunk)

    def _encode_ids(self, text: str) -> list[int]:
        """``tokenizers``' ids of ``text``; text with lone surrogates is encoded as if each were U+FFFD
        (the check costs nothing on the normal path: only a refused text is looked at again)."""
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        except TypeError:  # "TextInputSequence must be str": not encodable as UTF-8
            clean = _SURROGATE.sub("\ufffd", text)
            if clean == text:
                raise
            return self._tok.encode(clean, add_special_tokens=False).ids

    def _ids(self, pieces: list[str]) -> np.ndarray:
        """Token ids of one text's pieces, unknown tokens dropped, capped to head + tail."""
        head, tail = self.head_tokens, self.tail_tokens
        if len(pieces) == 1:
            ids = self._token_ids(pieces[0])
            if len(ids) > head + tail:
                ids = np.concatenate([ids[:head], ids[len(ids) - tail:]])
        else:
            last = self._token_ids(pieces[1])
            ids = np.concatenate([self._token_ids(pieces[0])[:head], last[max(0, len(last) - tail):]])
        if self._unk is not None:
            ids = ids[ids != self._unk]
        return ids

    def _pool(self, ids: np.ndarray, out: np.ndarray) -> None:
        if not ids.size:
            return
        v = self._sum_distinct(ids) if ids.size > _DEDUP_FROM else self._emb[ids].sum(axis=0)
        n = float(np.sqrt(v @ v))
        if n > 0:
            out[:] = v / n

    def _sum_distinct(self, ids: np.ndarray) -> np.ndarray:
        """The sum of ``ids``' rows as each distinct token's row times its count: at 500 tokens ~40% of
        the rows are distinct, and the gather (memory traffic) is the cost."""
        s = np.sort(ids)
        first = np.empty(len(s), dtype=bool)
        first[0] = True
        np.not_equal(s[1:], s[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, len(s))).astype(np.float32)
        return counts @ self._emb[s[starts]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed many prompts: (n, dim) float32, each row unit length (zero for token-less text)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; use encode_one() for a single prompt")
        texts = [self._check(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for i, t in enumerate(texts):
            self._pool(self._ids(self._clip_text(t)), out[i])
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one prompt: (dim,) float32; bit-identical to the matching row of ``encode``."""
        text = self._check(text)
        out = np.zeros(self.dim, dtype=np.float32)
        self._pool(self._ids(self._clip_text(text)), out)
        return out

    def count_tokens(self, text: str) -> int:
        """Number of tokens of the *whole* text under this encoder's (BERT WordPiece) tokenizer."""
        return len(self._token_ids(self._check(text)))

    def fingerprint(self) -> str:
        """16 hex chars over weights + tokenizer: routers store it to refuse a mismatched encoder."""
        return self._fingerprint

    @staticmethod
    def _check(text: object) -> str:
        if not isinstance(text, str):
            raise TypeError(f"prompt must be str, got {type(text).__name__}")
        return text

    def __repr__(self) -> str:
        return f"StaticEncoder(name={self.name!r}, dim={self.dim}, fingerprint={self._fingerprint!r})"


def _read_meta(root: Path) -> dict:
    """``encoder.json`` of an asset directory, as a dict (EncoderAssetError naming the file otherwise)."""
    meta_path = root / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderAssetError(meta_path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise EncoderAssetError(meta_path, "expected a JSON object")
    return meta


def _table_name(meta: dict) -> str:
    return str(meta.get("name", "static-encoder"))


def principal_directions(emb: np.ndarray, dims: int) -> np.ndarray:
    """(dim, dims) float32: the top ``dims`` principal directions of a token table (SVD of the centred
    table in float64), each direction's sign fixed so its largest coefficient is positive. What the
    shipped views project onto (``scripts/build_encoder.py``)."""
    E = np.asarray(emb, dtype=np.float64)
    Vt = np.linalg.svd(E - E.mean(axis=0), full_matrices=False)[2][:dims]
    Vt *= np.sign(Vt[np.arange(len(Vt)), np.abs(Vt).argmax(axis=1)])[:, None]
    return np.ascontiguousarray(Vt.T, dtype=np.float32)


def _view_projection(root: Path, meta: dict, view: str, dim: int) -> tuple[np.ndarray, str]:
    """The (dim, d) projection of ``view`` from ``views.safetensors``, checked; and the file's SHA-256."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    views = meta.get("views") or {}
    if view not in views:
        known = [_table_name(meta), *views]
        raise EncoderAssetError(root / META_FILE, f"no encoder view {view!r} (this asset has: {', '.join(known)})")
    v_path = root / VIEWS_FILE
    if not v_path.is_file():
        raise EncoderAssetError(v_path, "missing file of the encoder asset (rebuild: scripts/build_encoder.py --views-only)")
    v_bytes = v_path.read_bytes()
    digest = _sha256(v_bytes)
    if meta.get("views_sha256") and digest != meta["views_sha256"]:
        raise EncoderAssetError(v_path, "SHA-256 does not match encoder.json: the file is corrupt or was replaced")
    try:
        P = st_load(v_bytes).get(view)
    except (SafetensorError, ValueError, OSError) as exc:
        raise EncoderAssetError(v_path, f"unreadable safetensors file ({exc})") from None
    want = views[view].get("dims") if isinstance(views[view], dict) else None
    if P is None or P.ndim != 2 or P.shape[0] != dim or (want is not None and P.shape[1] != int(want)):
        raise EncoderAssetError(v_path, f"expected a {dim} x {want} tensor named {view!r}")
    if not np.isfinite(P).all():
        raise EncoderAssetError(v_path, f"view {view!r} contains NaN or infinity")
    return P, digest


def _is_uncased_bert_wordpiece(tokenizer) -> bool:
    """Whether the ASCII fast path reproduces this tokenizer exactly (BERT uncased WordPiece)."""
    try:
        spec = json.loads(tokenizer.to_str())
    except Exception:  # pragma: no cover - a tokenizer that cannot serialise: take the slow path
        return False
    norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    return (
        norm.get("type") == "BertNormalizer"
        and norm.get("lowercase") is True
        and norm.get("clean_text", True) is True
        and pre.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
    )


def default_encoder() -> StaticEncoder:
    """The shipped encoder's default view, loaded once per process."""
    return shipped_encoder(None)


def shipped_encoder(view: str | None) -> StaticEncoder:
    """A view of the shipped encoder by name (``None``: the default one), loaded once per process
    (one object, and one chunk memo, per view however it is asked for)."""
    return _shipped(view or _shipped_default_view())


@lru_cache(maxsize=1)
def _shipped_default_view() -> str:
    try:
        meta = _read_meta(ASSET_DIR)
    except (OSError, EncoderAssetError):
        return ""  # load() reports the damaged file by name
    return str(meta.get("default_view") or _table_name(meta))


@lru_cache(maxsize=4)
def _shipped(view: str) -> StaticEncoder:
    return StaticEncoder.load(None, view or None)
