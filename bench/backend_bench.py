"""Tokens per second of each embedded model through tierwise's llama.cpp backend (CPU).

Run:  python bench/backend_bench.py                    # all installed embedded models, n_threads=2
      python bench/backend_bench.py --models smollm2-135m --threads 2 --tokens 64

For each model it prints load time, prompt (prefill) and generation speed, and the latency of a
one-token multiple-choice grading call (``first_token_top``). Numbers are measured, not hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from tierwise.backends.llama_local import LlamaBackend
from tierwise.weights import EMBEDDED, WeightsError, model_path

PROMPT = [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number, with a docstring."}]
LONG = [{"role": "user", "content": "Summarise this text in one sentence: " + "The quick brown fox jumps over the lazy dog. " * 40}]
MC = [{"role": "user", "content": "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Mercury\nAnswer with one letter."}]


async def bench(backend: LlamaBackend, tokens: int, reps: int) -> dict:
    await backend.chat(PROMPT, max_tokens=4)  # warm-up
    gen = []
    for _ in range(reps):
        r = await backend.chat(PROMPT, max_tokens=tokens)
        gen.append((r.tokens_out, r.latency_s))
    # prefill: a long prompt with a 1-token answer; a changed first word defeats the prefix cache
    pre = []
    for i in range(reps):
        msgs = [{"role": "user", "content": f"Run {i}. " + LONG[0]["content"]}]
        r = await backend.chat(msgs, max_tokens=1)
        pre.append((r.tokens_in, r.latency_s))
    mc = []
    for _ in range(reps):
        r = await backend.chat(MC, max_tokens=1, top_logprobs=5)
        mc.append(r.latency_s)
    return {
        "gen_tok_s": sum(t for t, _ in gen) / sum(s for _, s in gen),
        "gen_tokens": statistics.mean(t for t, _ in gen),
        "prefill_tok_s": sum(t for t, _ in pre) / sum(s for _, s in pre),
        "prefill_tokens": statistics.mean(t for t, _ in pre),
        "mc_ms": 1000 * statistics.median(mc),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(EMBEDDED))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs slow every number)")
    print(f"{'model':<22} {'load s':>7} {'gen tok/s':>10} {'prefill tok/s':>14} {'MC grade ms':>12}   (n_threads={args.threads})")
    for mid in args.models:
        try:
            path = model_path(mid)
        except WeightsError as exc:
            print(f"{mid:<22} skipped: {exc}")
            continue
        t0 = time.perf_counter()
        backend = LlamaBackend(mid, path, context_window=2048, n_threads=args.threads, timeout_s=3600)
        load = time.perf_counter() - t0
        res = asyncio.run(bench(backend, args.tokens, args.reps))
        asyncio.run(backend.aclose())
        print(f"{mid:<22} {load:>7.2f} {res['gen_tok_s']:>10.1f} {res['prefill_tok_s']:>14.1f} {res['mc_ms']:>12.1f}"
              f"   (gen {res['gen_tokens']:.0f} tok, prefill {res['prefill_tokens']:.0f} tok)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
