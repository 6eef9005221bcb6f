"""What a collection run did (cells computed, reused, retried, failed) and what the table says."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .table_writer import CORRECT, COST, LATENCY, LOGPROB, TOKENS_IN, TOKENS_OUT, table_models


@dataclass
class CollectReport:
    out: Path
    rows: int
    models: list[str]
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (model, item_id, error)
    retried: int = 0  # cells sent again because the worker running them died (Ray)
    accuracy: dict[str, float] = field(default_factory=dict)
    mean_cost: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    runner: str = "local"


def summarise(report: CollectReport, out: Path) -> None:
    """Fill the report's per-model accuracy and mean cost from the written table."""
    import pandas as pd

    frame = pd.read_csv(out, low_memory=False)
    for m in report.models:
        report.accuracy[m] = float(frame[CORRECT + m].mean())
        report.mean_cost[m] = float(frame[COST + m].mean())


def summary(path: str | Path):
    """Per (grader, model): rows, accuracy, mean cost, tokens and latency of a collected table."""
    import pandas as pd

    frame = pd.read_csv(path, low_memory=False)
    models = table_models(frame)
    groups = [("all", frame)] + (list(frame.groupby("grader")) if "grader" in frame else [])
    rows = []
    for g, f in groups:
        for m in models:
            rows.append({
                "grader": g, "model": m, "rows": int(f[CORRECT + m].notna().sum()),
                "accuracy": f[CORRECT + m].mean(), "mean_cost_usd": f[COST + m].mean(),
                "mean_tokens_in": f[TOKENS_IN + m].mean(), "mean_tokens_out": f[TOKENS_OUT + m].mean(),
                "mean_latency_s": f[LATENCY + m].mean(), "mean_logprob": f[LOGPROB + m].mean(),
            })
    return pd.DataFrame(rows)
