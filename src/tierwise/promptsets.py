"""Prompt sets for ``tierwise collect``: the user's own file, or a built-in benchmark sample.

A prompt set is a list of items ``{"prompt", "answer"?, "source", "item_id", ...}`` plus the grader
that suits it. Built-in sets (``gsm8k``, ``mmlu_pro``) read the copies in ``data/outcomes/`` and take
a fixed-seed sample stratified by ``source`` (MMLU-Pro subject), so a 300-item run covers every
subject in proportion and two people who run the same command grade the same items.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hashing import prompt_hash as _prompt_hash
from .table import TableError, load_prompts

BUILTIN = {
    # name: (file in data/outcomes, default grader)
    "gsm8k": ("gsm8k_test.jsonl.gz", "numeric"),
    "mmlu_pro": ("mmlu_pro.csv.gz", "choice-logprob"),
}
DEFAULT_SEED = 0


@dataclass
class PromptSet:
    name: str
    items: list[dict]
    default_grader: str | None

    def __len__(self) -> int:
        return len(self.items)


def data_dir() -> Path:
    """Where the built-in sets live: ``$TIERWISE_DATA``, else the repository's ``data/outcomes``."""
    env = os.environ.get("TIERWISE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "outcomes"


def prompt_hash(text: str) -> str:
    """The prompt's id in outcome tables and collection cells (20 digits of the one hash)."""
    return _prompt_hash(text, 20)


def stratified_sample(sources: list[str], limit: int, seed: int = DEFAULT_SEED) -> list[int]:
    """Row indices of a fixed-seed sample of ``limit`` rows, each source in proportion (largest remainder).

    Returned in original row order so the table reads like the source file. Samples are nested:
    each source's rows come from one fixed shuffle, so growing ``limit`` only adds rows.
    """
    n = len(sources)
    if limit >= n:
        return list(range(n))
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    names = sorted(groups)
    quotas = {g: limit * len(groups[g]) / n for g in names}
    alloc = {g: int(math.floor(q)) for g, q in quotas.items()}
    left = limit - sum(alloc.values())
    for g in sorted(names, key=lambda g: (-(quotas[g] - alloc[g]), g))[:left]:
        alloc[g] += 1
    chosen: list[int] = []
    for g in names:
        # a fixed per-source shuffle, cut at the quota: a larger --limit extends a smaller one,
        # so a bigger rerun reuses the cells already collected
        key = int.from_bytes(hashlib.sha256(f"{seed}:{g}".encode()).digest()[:8], "little")
        order = np.random.default_rng(key).permutation(len(groups[g]))
        chosen.extend(groups[g][i] for i in order[: alloc[g]])
    return sorted(chosen)


def _gsm8k(path: Path) -> list[dict]:
    items = []
    for i, rec in enumerate(load_prompts(path)):
        if "####" not in str(rec.get("answer", "")):
            raise TableError(path, f"data row {i + 1}: 'answer' has no '#### <number>' final answer")
        items.append({"prompt": rec["prompt"], "answer": rec["answer"], "source": "gsm8k", "item_id": f"gsm8k/test/{i}"})
    return items


def _mmlu_pro(path: Path) -> list[dict]:
    items = []
    for i, rec in enumerate(load_prompts(path)):
        answer = str(rec.get("answer", "")).strip()
        if not re.fullmatch(r"[A-J]", answer):
            raise TableError(path, f"data row {i + 1}: 'answer' {answer!r} is not a letter A-J")
        items.append(
            {
                "prompt": rec["prompt"],
                "answer": answer,
                "source": str(rec.get("source") or "mmlu_pro"),
                "item_id": str(rec.get("item_id") or f"mmlu_pro/{i}"),
            }
        )
    return items


def _guess_grader(items: list[dict]) -> str | None:
    answers = [str(it["answer"]).strip() for it in items if it.get("answer") is not None]
    if not answers or len(answers) < len(items):
        return None
    if all(re.fullmatch(r"\(?[A-J]\)?", a) for a in answers):
        return "choice"
    from .graders import gold_number

    if all("####" in a or re.fullmatch(r"[-+$]?[\d,]+(?:\.\d+)?", a) for a in answers) and all(
        gold_number(a) is not None for a in answers
    ):
        return "numeric"
    return "exact"


def load_promptset(spec: str | Path, *, limit: int | None = None, seed: int = DEFAULT_SEED) -> PromptSet:
    """A built-in set by name (``gsm8k``, ``mmlu_pro``) or a JSONL/CSV file of prompts."""
    if limit is not None and limit < 1:
        raise TableError(str(spec), f"--limit must be >= 1, got {limit}")
    name = str(spec)
    if name in BUILTIN:
        filename, grader = BUILTIN[name]
        path = data_dir() / filename
        if not path.exists():
            raise TableError(path, f"built-in prompt set {name!r} not found (set TIERWISE_DATA to the folder holding {filename})")
        items = _gsm8k(path) if name == "gsm8k" else _mmlu_pro(path)
    else:
        path = Path(spec)
        raw = load_prompts(path)
        items = []
        for i, rec in enumerate(raw):
            item = dict(rec)
            item.setdefault("source", path.stem)
            item["source"] = str(item["source"])
            item.setdefault("item_id", f"{path.stem}/{i}")
            items.append(item)
        grader = _guess_grader(items)
        name = path.name
    seen: dict[str, int] = {}
    ids: dict[str, int] = {}
    for i, it in enumerate(items):
        h = prompt_hash(it["prompt"])
        if h in seen and name not in BUILTIN:
            raise TableError(str(spec), f"data row {i + 1} repeats the prompt of data row {seen[h] + 1}")
        seen.setdefault(h, i)
        iid = str(it["item_id"])
        if iid in ids and name not in BUILTIN:  # the table's rows are named by it: two rows, one name
            raise TableError(str(spec), f"data row {i + 1} repeats the item_id {iid!r} of data row {ids[iid] + 1}")
        ids.setdefault(iid, i)
    if limit is not None:
        keep = stratified_sample([it["source"] for it in items], limit, seed)
        items = [items[i] for i in keep]
    return PromptSet(name=name, items=items, default_grader=grader)
