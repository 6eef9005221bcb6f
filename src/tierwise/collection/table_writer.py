"""The wide outcome table, built from the cell store and written deterministically.

One row per item in prompt-set order, one column group per model in pyramid order (``correct|m``,
``cost|m``, ``tokens_in|m``, ``tokens_out|m``, ``latency_s|m``, ``logprob|m``, ``pred|m``), NaN
where a cell is missing. The table depends only on the items, the models and the cells in the
store, never on which runner computed them or in what order: the same cells give byte-identical
files (a gzip header with no name and mtime 0), so a Ray run and a local run agree to the byte.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterable

from .spec import CollectError, ModelSpec
from .store import CellStore

CORRECT, COST, TOKENS_IN, TOKENS_OUT, LATENCY, LOGPROB, PRED = (
    "correct|", "cost|", "tokens_in|", "tokens_out|", "latency_s|", "logprob|", "pred|"
)


def build_frame(items: list[dict], hashes: list[str], models: list[ModelSpec], store: CellStore, settings: str,
                grader_name: str):
    """The wide table as a DataFrame: one row per item, per-model column groups, NaN for missing cells."""
    import pandas as pd

    cols: dict[str, list] = {
        "prompt": [it["prompt"] for it in items],
        "source": [str(it.get("source", "")) for it in items],
        "item_id": [str(it.get("item_id", "")) for it in items],
        "answer": [None if it.get("answer") is None else str(it["answer"]) for it in items],
        "grader": [grader_name] * len(items),
    }
    nan = float("nan")
    for spec in models:
        done = store.done(spec, settings)
        rows = [done.get(h) for h in hashes]
        cols[CORRECT + spec.name] = [c.correct if c else nan for c in rows]
        cols[COST + spec.name] = [c.cost if c else nan for c in rows]
        cols[TOKENS_IN + spec.name] = [c.tokens_in if c else nan for c in rows]
        cols[TOKENS_OUT + spec.name] = [c.tokens_out if c else nan for c in rows]
        cols[LATENCY + spec.name] = [round(c.latency_s, 4) if c else nan for c in rows]
        cols[LOGPROB + spec.name] = [c.logprob if c and c.logprob is not None else nan for c in rows]
        cols[PRED + spec.name] = [c.pred if c else None for c in rows]
    return pd.DataFrame(cols)


def write_frame(frame, out: Path) -> None:
    """Atomic write (temp file + rename): a reader never sees half a table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if out.name.endswith(".gz"):
            # no file name and mtime 0 in the header: the same cells give byte-identical files,
            # so rewriting the committed table does not churn git
            data = frame.to_csv(index=False).encode("utf-8")
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(data)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(items, hashes, models, store, settings, grader_name, out: Path) -> None:
    write_frame(build_frame(items, hashes, models, store, settings, grader_name), out)


def table_models(frame) -> list[str]:
    """The model names of a wide table, in column order."""
    return [c[len(CORRECT):] for c in frame.columns if c.startswith(CORRECT)]


def merge_tables(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Stack collected tables of the same models (e.g. one per grader) into one table."""
    import pandas as pd

    frames = []
    models: list[str] | None = None
    for p in paths:
        f = pd.read_csv(p, low_memory=False)
        ms = table_models(f)
        if models is not None and ms != models:
            raise CollectError(f"{p}: models {ms} differ from the first table's {models}")
        models = ms
        frames.append(f)
    if not frames:
        raise CollectError("nothing to merge")
    out = Path(out)
    write_frame(pd.concat(frames, ignore_index=True), out)
    return out
