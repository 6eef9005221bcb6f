#!/usr/bin/env python3
"""Build a tierwise wide outcome table from a git mirror of WildEval/ZeroEval (formerly allenai/ZeroEval).

    python3 zeroeval_table.py GIT_DIR OUT.csv.gz [--tasks math-l5,crux] [--models m1,m2,...]
                              [--commit C] [--prices-yaml P.yaml] [--provenance P.json] [--list]

Source: https://github.com/WildEval/ZeroEval (Apache-2.0), commit aa64adc5b008 (2024-12-23, the last
one touching result_dirs/crux and result_dirs/math-l5; HEAD 8c1485edf12c, 2025-04-14, has the same
files). ``result_dirs/<task>/<model>.json`` holds each model's greedy (temperature 0) zero-shot output
for every example, asked to answer as JSON ``{"reasoning": ..., "answer": ...}``. Tasks used:
``math-l5`` (721 MATH level-5 problems, MIT) and ``crux`` (800 CRUXEval output-prediction problems,
MIT). One row per example, ``prompt`` = the item's ``problem`` (math-l5) or ``question`` (crux),
``source`` = ``zeroeval/<task>``, ``item_id`` = ``<task>/<id>``.

``correct|<model>`` is 1/0 by ZeroEval's own rule (src/evaluation/math_eval.py, crux_eval.py,
eval_utils.py; re-implemented here, and checked against result_dirs/<task>.summary.json):
the answer is the first complete ``{...}`` of ``output[0]`` parsed as JSON, else a regex for
``"answer": "..."`` / ``"answer": x`` / ``answer: x``, else (model names containing "Llama-3.1" whose
last 30 characters hold "boxed") the first ``\\boxed{word}``; no answer -> 0.
math-l5: "$" and "," removed; a plain fraction ``a/b`` becomes its float (ZeroEval ``eval``s any answer
holding "/"; model output is not eval'd here); correct iff the first numbers (``-?\\d+(\\.\\d+)?``) of
answer and reference are equal as floats. crux: ``str(answer)`` with quotes stripped and newlines
escaped must equal the reference string exactly. Every default model's accuracy on both tasks equals
ZeroEval's summary (the script prints both).

``outchars|<model>`` = characters of ``output[0]``; ``tokens_in|<model>`` = ceil(len(prompt actually
sent, i.e. ``chat_history[0]`` with ZeroEval's template) / 4), tierwise's ``estimate_tokens``.
``cost|<model>`` = USD per request = (tokens_in * input_price + outchars / 4 * output_price) / 1e6 with
the per-1M-token prices in MODELS (litellm's model_prices_and_context_window.json as vendored in
AgentOps-AI/tokencost tokencost/model_prices.json @ e7f7c19, the same source as alpaca_eval_table.py;
open-weight models at litellm's Together AI serverless size tiers unless a served endpoint is named).
``size_b|<model>`` = parameter count (billions), open models only.

Left out of the default model list: o1-mini / o1-preview (their billed hidden reasoning tokens are not
in the output, so cost cannot be derived), gemini-1.5-*-exp-0827 (free experimental endpoints),
reka-core (no litellm price), Meta-Llama-3.1-405B-Instruct@hyperbolic (second copy of the 405B model,
15 math-l5 items missing) and models present in only one task. ``--list`` shows every file.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys

from _common import estimate_tokens, git, price_notes, write_prices_yaml

COMMIT = "aa64adc5b008fe7be75a966afa2a6c490c1fb622"
TASKS = ("math-l5", "crux")
# name -> (size_b or None, input USD/1M, output USD/1M, price note (litellm entry))
MODELS: dict[str, tuple[float | None, float, float, str]] = {
    "gpt-4-0314": (None, 30.0, 60.0, "gpt-4-0314"),
    "claude-3-opus-20240229": (None, 15.0, 75.0, "claude-3-opus-20240229"),
    "gpt-4-turbo-2024-04-09": (None, 10.0, 30.0, "gpt-4-turbo-2024-04-09"),
    "gpt-4o-2024-05-13": (None, 5.0, 15.0, "gpt-4o-2024-05-13"),
    "chatgpt-4o-latest-24-09-07": (None, 5.0, 15.0, "chatgpt-4o-latest"),
    "Llama-3.1-405B-Inst@sambanova": (405, 5.0, 10.0, "sambanova/Meta-Llama-3.1-405B-Instruct (the endpoint used)"),
    "gpt-4o-2024-08-06": (None, 2.5, 10.0, "gpt-4o-2024-08-06"),
    "claude-3-5-sonnet-20240620": (None, 3.0, 15.0, "claude-3-5-sonnet-20240620"),
    "claude-3-5-sonnet-20241022": (None, 3.0, 15.0, "claude-3-5-sonnet-20241022"),
    "Mistral-Large-2": (123, 3.0, 9.0, "mistral/mistral-large-2407"),
    "grok-2-1212": (None, 2.0, 10.0, "xai/grok-2-1212"),
    "gemini-1.5-pro": (None, 1.25, 5.0, "gemini-1.5-pro (vertex_ai)"),
    "claude-3-5-haiku-20241022": (None, 0.8, 4.0, "claude-3-5-haiku-20241022"),
    "gpt-3.5-turbo-0125": (None, 0.5, 1.5, "gpt-3.5-turbo-0125"),
    "claude-3-haiku-20240307": (None, 0.25, 1.25, "claude-3-haiku-20240307"),
    "deepseek-v2.5-0908": (236, 0.14, 0.28, "deepseek/deepseek-coder (V2-era API price; deepseek-chat's 0.27/1.1 is V3's)"),
    "gpt-4o-mini-2024-07-18": (None, 0.15, 0.6, "gpt-4o-mini-2024-07-18"),
    "gemini-1.5-flash": (None, 0.075, 0.3, "gemini-1.5-flash (vertex_ai)"),
}
# open-weight models: litellm's Together AI serverless size tiers (USD/1M, input = output), by size_b
TIERS = ((4, 0.1, "up-to-4b"), (8, 0.2, "4.1b-8b"), (21, 0.3, "8.1b-21b"), (41, 0.8, "21.1b-41b"), (80, 0.9, "41.1b-80b"))
OPEN = {"Qwen2.5-72B-Instruct": 72, "Qwen2-72B-Instruct": 72, "Athene-70B": 70, "Meta-Llama-3.1-70B-Instruct": 70,
        "Meta-Llama-3-70B-Instruct": 70, "Yi-1.5-34B-Chat": 34, "Qwen2.5-32B-Instruct": 32, "gemma-2-27b-it": 27,
        "Yi-1.5-9B-Chat": 9, "gemma-2-9b-it": 9, "Meta-Llama-3.1-8B-Instruct": 8, "Meta-Llama-3-8B-Instruct": 8,
        "Qwen2.5-7B-Instruct": 7, "Qwen2-7B-Instruct": 7, "Phi-3-mini-4k-instruct": 3.8, "Phi-3.5-mini-instruct": 3.8,
        "Qwen2.5-3B-Instruct": 3, "gemma-2-2b-it": 2}
for _m, _size in OPEN.items():
    _, _p, _tier = next(t for t in TIERS if _size <= t[0])
    MODELS[_m] = (_size, _p, _p, f"together-ai-{_tier}")



def first_json(s: str):
    """The first balanced {...} of s parsed as JSON (newlines dropped), None if it does not parse."""
    depth, start = 0, None
    for i, ch in enumerate(s):
        if ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    return json.loads(s[start:i + 1].replace("\n", ""))
                except json.JSONDecodeError:
                    return None
    return None


def regex_answer(s: str):
    for pat, flags in ((r'"answer"\s*:\s*"([^"]*?)"', 0), (r'"answer"\s*:\s*"(.*?)"', re.DOTALL),
                       (r'"answer"\s*:\s*([^,\s]*)', 0), (r'answer\s*:\s*([^,\s]*)', 0)):
        m = re.search(pat, s, flags)
        if m:
            return m.group(1)
    return None


def extract(model: str, out: str) -> tuple[bool, object]:
    """(found, answer); a JSON null answer is found and compares as the string "None", as in ZeroEval."""
    pred = first_json(out)
    if isinstance(pred, dict) and "answer" in pred:
        return True, pred["answer"]
    ans = regex_answer(out)
    if ans is None and "Llama-3.1" in model and "boxed" in out[-30:]:
        m = re.search(r"\\boxed{([\w\d]+)}", out)
        ans = m.group(1) if m else None
    return ans is not None, ans


FRAC = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*/\s*([-+]?\d+(?:\.\d+)?)\s*")
NUM = re.compile(r"-?\d+(\.\d+)?")


def sanitize_math(a: str) -> str:
    a = a.replace("$", "").strip().replace(",", "")
    m = FRAC.fullmatch(a)
    if m and float(m.group(2)) != 0:
        a = str(float(m.group(1)) / float(m.group(2)))
    return a


def score(task: str, model: str, item: dict) -> float:
    found, ans = extract(model, item["output"][0])
    if not found:
        return 0.0
    if task == "crux":
        got = str(ans).strip("'\"").replace("\n", "\\n")
        ref = str(item["answer"]).strip("'\"")
        return float(got == ref)
    got = NUM.search(sanitize_math(str(ans)))
    ref = NUM.search(sanitize_math(item["answer"].replace("#", "").strip()))
    return float(bool(got and ref and float(got.group()) == float(ref.group())))



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("git_dir")
    ap.add_argument("out")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated result_dirs/<task> (math-l5, crux)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated result file names (no .json)")
    ap.add_argument("--commit", default=COMMIT, help="commit to read (default: %(default).12s)")
    ap.add_argument("--prices-yaml", help="also write the per-1M-token prices as a tierwise price book")
    ap.add_argument("--provenance", help="write per-task/model blob and accuracy (JSON)")
    ap.add_argument("--list", action="store_true", help="list result files per task and exit")
    a = ap.parse_args(argv)
    import pandas as pd

    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    files = {t: {line.split("\t")[1].rsplit("/", 1)[1][:-5]: line.split()[2] for line in
                 git(a.git_dir, "ls-tree", a.commit, f"result_dirs/{t}/").decode().splitlines()
                 if line.endswith(".json")} for t in tasks}
    if a.list:
        for t in tasks:
            print(t, " ".join(sorted(files[t])))
        return 0
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    missing = [(t, m) for t in tasks for m in models if m not in files[t]]
    if missing:
        print(f"no result file for: {missing}", file=sys.stderr)
        return 1
    unpriced = [m for m in models if m not in MODELS]
    if unpriced:
        print(f"no price in MODELS for {unpriced}: cost left empty", file=sys.stderr)

    rows: dict[str, dict] = {}
    prov: dict = {}
    for t in tasks:
        for m in models:
            data = json.loads(git(a.git_dir, "show", f"{a.commit}:result_dirs/{t}/{m}.json"))
            size, p_in, p_out, _ = MODELS.get(m, (None, math.nan, math.nan, ""))
            hits = 0.0
            for it in data:
                key = f"{t}/{it['id']}"
                row = rows.setdefault(key, {"prompt": it.get("problem") or it.get("question"),
                                            "source": f"zeroeval/{t}", "item_id": key})
                hist = it["chat_history"]
                sent = ast.literal_eval(hist)[0] if isinstance(hist, str) else hist[0]
                out = it["output"][0] if it.get("output") else ""
                v = score(t, m, it) if out else 0.0
                hits += v
                t_in = estimate_tokens(sent)
                row["correct|" + m] = v
                row["outchars|" + m] = len(out)
                row["tokens_in|" + m] = t_in
                row["cost|" + m] = (t_in * p_in + len(out) / 4.0 * p_out) / 1e6
                if size is not None:
                    row["size_b|" + m] = size
            prov.setdefault(t, {})[m] = {"blob": files[t][m], "items": len(data),
                                         "acc": round(100 * hits / max(len(data), 1), 2)}
    frame = pd.DataFrame(list(rows.values()))
    frame.to_csv(a.out, index=False, float_format="%.6g")
    print(f"{a.out}: {len(frame)} rows, {len(models)} models, tasks {tasks}, commit {a.commit[:12]}")
    for t in tasks:
        ref = {r["Model"]: float(r["Acc"]) for r in json.loads(git(a.git_dir, "show", f"{a.commit}:result_dirs/{t}.summary.json"))}
        for m in models:
            p = prov[t][m]
            p["summary_acc"] = ref.get(m)
            print(f"  {t:8s} {m:32s} items {p['items']:4d}  acc {p['acc']:6.2f}  (ZeroEval summary {p['summary_acc']})")
    if a.provenance:
        with open(a.provenance, "w") as fh:
            json.dump({"repo": "WildEval/ZeroEval", "commit": a.commit, "tasks": prov,
                       "prices_usd_per_1m": price_notes(models, MODELS)}, fh, indent=1)
    if a.prices_yaml:
        write_prices_yaml(a.prices_yaml, models, MODELS, "litellm price table via AgentOps-AI/tokencost (see zeroeval_table.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
