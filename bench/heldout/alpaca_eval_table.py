#!/usr/bin/env python3
"""Build a tierwise wide outcome table from a git mirror of tatsu-lab/alpaca_eval.

    python3 alpaca_eval_table.py GIT_DIR OUT.csv.gz [--annotator A] [--models m1,m2,...]
                                 [--prices-yaml P.yaml] [--provenance P.json] [--list]

One row per AlpacaEval instruction (805), ``prompt`` = instruction, ``source`` =
``alpaca_eval/<dataset>`` (helpful_base, koala, oasst, selfinstruct, vicuna).

``correct|<model>`` = P(model's output preferred over the reference output) from
``results/<model>/<annotator>/annotations.json``. AlpacaEval encodes ``preference`` as a float in
[1, 2] (1 = reference ``generator_1`` wins, 2 = ``generator_2`` = the model wins, 1.5 = draw, and
0 = draw for backward compatibility); its own win rate is ``mean(preference - 1)`` with 0 mapped to
1.5 and non-preferences dropped (src/alpaca_eval/metrics/helpers.py, AbsoluteScoringRule). We do
the same per instruction: 0 -> 0.5, values outside [1, 2] or missing -> empty cell.

``outchars|<model>`` = characters of the judged output (``output_2`` of the annotation record).
``tokens_in|<model>`` = ceil(len(prompt) / 4), tierwise's own ``estimate_tokens`` (the same for
every model; written so the loader labels the cost column as USD).
``cost|<model>`` = USD per request = (tokens_in * input_price + outchars / 4 * output_price) / 1e6
with the per-1M-token prices in PRICES below (source: litellm's model_prices_and_context_window.json,
as vendored in AgentOps-AI/tokencost tokencost/model_prices.json; see docs/heldout.md).
``size_b|<model>`` = parameter count (billions) read from the model name, open models only.

The snapshot a ``fetch`` mirror holds lacks files >= 4 MiB, so most recent annotation files are
absent at HEAD. For each model the script takes the newest version of the annotation file whose
blob is present in the mirror (walking every commit), and records commit/blob in the provenance
file. Files are read with ``git show <commit>:<path>``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import subprocess
import sys

from _common import estimate_tokens, git, price_notes, write_prices_yaml

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"

# name -> (size_b or None, input USD/1M, output USD/1M, price note)
# API list prices: litellm table entries (openai / anthropic). Open-weight models: litellm's Together AI
# serverless size tiers (together-ai-up-to-4b 0.1, -4.1b-8b 0.2, -8.1b-21b 0.3, -21.1b-41b 0.8,
# -41.1b-80b 0.9, -81.1b-110b 1.8 USD/1M, input = output), tier chosen by size_b.
MODELS: dict[str, tuple[float | None, float, float, str]] = {
    "gpt4_1106_preview": (None, 10.0, 30.0, "litellm gpt-4-1106-preview (AlpacaEval 2 reference model)"),
    "claude-2.1": (None, 8.0, 24.0, "litellm claude-2.1"),
    "claude-instant-1.2": (None, 1.63, 5.51, "litellm claude-instant-1 (its claude-instant-1.2 entry, 0.163/0.551, is 10x off)"),
    "gpt-3.5-turbo-1106": (None, 1.0, 2.0, "litellm gpt-3.5-turbo-1106"),
    "humpback-llama2-70b": (70, 0.9, 0.9, "together-ai-41.1b-80b"),
    "Qwen-14B-Chat": (14, 0.3, 0.3, "together-ai-8.1b-21b"),
    "vicuna-13b-v1.5": (13, 0.3, 0.3, "together-ai-8.1b-21b"),
    "FuseChat-Gemma-2-9B-Instruct": (9, 0.3, 0.3, "together-ai-8.1b-21b"),
    "FuseChat-Llama-3.1-8B-Instruct": (8, 0.2, 0.2, "together-ai-4.1b-8b"),
    "FuseChat-Qwen-2.5-7B-Instruct": (7, 0.2, 0.2, "together-ai-4.1b-8b"),
    "OpenHermes-2.5-Mistral-7B": (7, 0.2, 0.2, "together-ai-4.1b-8b"),
    "gemma-7b-it": (7, 0.2, 0.2, "together-ai-4.1b-8b (by name; gemma-7b has ~8.5B parameters)"),
    "FuseChat-Llama-3.2-3B-Instruct": (3, 0.1, 0.1, "together-ai-up-to-4b"),
    "gemma-2b-it": (2, 0.1, 0.1, "together-ai-up-to-4b"),
    "FuseChat-Llama-3.2-1B-Instruct": (1, 0.1, 0.1, "together-ai-up-to-4b"),
}



def present_blobs(git_dir: str, shas: list[str]) -> set[str]:
    p = subprocess.run(["git", "--git-dir", git_dir, "cat-file", "--batch-check"],
                       input="\n".join(shas) + "\n", capture_output=True, text=True)
    return {line.split()[0] for line in p.stdout.splitlines() if line and not line.endswith("missing")}


def newest_present(git_dir: str, paths: list[str]) -> dict[str, tuple[str, str]]:
    """path -> (commit, blob) of the newest commit whose version of ``path`` is present in the mirror."""
    found: dict[str, tuple[str, str]] = {}
    commits = git(git_dir, "rev-list", "--date-order", "HEAD", check=False).decode().split()
    checked: dict[str, bool] = {}
    for c in commits:
        todo = [p for p in paths if p not in found]
        if not todo:
            break
        out = git(git_dir, "ls-tree", c, "--", *todo, check=False).decode()
        entries = [line.split(None, 3) for line in out.splitlines()]
        new = [e[2] for e in entries if len(e) == 4 and e[2] not in checked]
        if new:
            ok = present_blobs(git_dir, new)
            checked.update({s: s in ok for s in new})
        for e in entries:
            if len(e) == 4 and checked.get(e[2]) and e[3] not in found:
                found[e[3]] = (c, e[2])
    return found


def win_prob(pref) -> float:
    try:
        v = float(pref)
    except (TypeError, ValueError):
        return math.nan
    if v == 0.0:
        v = 1.5
    if not (1.0 <= v <= 2.0):
        return math.nan
    return v - 1.0



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("git_dir")
    ap.add_argument("out")
    ap.add_argument("--annotator", default=ANNOTATOR)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated results/<model> folders")
    ap.add_argument("--prices-yaml", help="also write the per-1M-token prices as a tierwise price book")
    ap.add_argument("--provenance", help="write per-model commit/blob/row counts (JSON)")
    ap.add_argument("--list", action="store_true", help="list models with a present annotation file and exit")
    a = ap.parse_args(argv)
    import pandas as pd

    if a.list:
        heads = git(a.git_dir, "ls-tree", "-r", "--name-only", "HEAD", "--", "results").decode().split()
        names = sorted({p.split("/")[1] for p in heads})
        paths = [f"results/{m}/{a.annotator}/annotations.json" for m in names]
        found = newest_present(a.git_dir, paths)
        for p in sorted(found):
            print(p.split("/")[1])
        return 0

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    paths = {m: f"results/{m}/{a.annotator}/annotations.json" for m in models}
    found = newest_present(a.git_dir, list(paths.values()))
    missing = [m for m in models if paths[m] not in found]
    if missing:
        print(f"no present annotation file for: {missing}", file=sys.stderr)
        return 1

    prompts: dict[str, str] = {}  # instruction -> dataset, in first-seen order
    cells: dict[str, dict[str, tuple[float, int]]] = {}
    prov = {}
    for m in models:
        commit, blob = found[paths[m]]
        records = json.loads(git(a.git_dir, "show", f"{commit}:{paths[m]}"))
        per: dict[str, tuple[float, int]] = {}
        refs = collections.Counter()
        for r in records:
            if r.get("generator_2") != m:
                raise SystemExit(f"{paths[m]}: generator_2 is {r.get('generator_2')!r}, expected {m!r}")
            refs[r.get("generator_1")] += 1
            ins = r["instruction"]
            prompts.setdefault(ins, r.get("dataset") or "")
            out = r.get("output_2")
            per[ins] = (win_prob(r.get("preference")), len(out) if isinstance(out, str) else -1)
        cells[m] = per
        vals = [v for v, _ in per.values() if not math.isnan(v)]
        prov[m] = {"path": paths[m], "commit": commit, "blob": blob, "records": len(records),
                   "scored": len(vals), "reference": dict(refs),
                   "win_rate": round(sum(vals) / max(len(vals), 1), 4)}
    refs = {r for p in prov.values() for r in p["reference"]}
    if len(refs) != 1:
        raise SystemExit(f"annotations compare against different references: {refs}")

    rows = []
    for i, (ins, ds) in enumerate(prompts.items()):
        row = {"prompt": ins, "source": f"alpaca_eval/{ds}" if ds else "alpaca_eval", "item_id": i}
        t_in = estimate_tokens(ins)
        for m in models:
            size, p_in, p_out, _ = MODELS.get(m, (None, math.nan, math.nan, ""))
            v, chars = cells[m].get(ins, (math.nan, -1))
            row["correct|" + m] = v
            row["outchars|" + m] = chars if chars >= 0 else math.nan
            row["tokens_in|" + m] = t_in
            if not math.isnan(p_in):
                row["cost|" + m] = ((t_in * p_in + (chars / 4.0) * p_out) / 1e6) if chars >= 0 else math.nan
            if size is not None:
                row["size_b|" + m] = size
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(a.out, index=False, float_format="%.6g")
    print(f"{a.out}: {len(frame)} rows, {len(models)} models, reference {refs.pop()}, annotator {a.annotator}")
    for m in models:
        p = prov[m]
        print(f"  {m:34s} scored {p['scored']:4d}  win_rate {p['win_rate']:.3f}  commit {p['commit'][:10]}")
    if a.provenance:
        with open(a.provenance, "w") as fh:
            json.dump({"repo": "tatsu-lab/alpaca_eval", "annotator": a.annotator, "models": prov,
                       "prices_usd_per_1m": price_notes(models, MODELS)}, fh, indent=1)
    if a.prices_yaml:
        write_prices_yaml(a.prices_yaml, models, MODELS, "see docs/heldout.md (litellm price table via AgentOps-AI/tokencost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
