"""User ratings (``POST /v1/feedback``) as extra training rows.

A rating says how well the model that answered did on that prompt, and nothing about the other
models: each rated request becomes a row with one outcome and the rest missing (NaN), which the
learned routers mask out. Ratings need the prompt text, so the gateway must log prompts
(``log_prompts``); rated requests without it are counted and skipped, never guessed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .table import OutcomeTable


def add_feedback_rows(table: OutcomeTable, log_url: str) -> tuple[OutcomeTable, int]:
    from .decision_log import open_log

    log = open_log(log_url)
    try:
        rated = log.feedback_rows()
    finally:
        log.close()
    if not rated:
        raise ValueError(f"{log_url}: the decision log has no feedback rows")
    usable = [r for r in rated if r.get("prompt") and r.get("model") in table.models]
    if not usable:
        raise ValueError(
            f"{log_url}: {len(rated)} rated request(s), but none has its prompt text and a model of this table "
            f"({table.models}); run the gateway with prompt logging on to train from feedback"
        )
    n_new = len(usable)
    correct = np.full((n_new, table.n_models), np.nan)
    for i, r in enumerate(usable):
        correct[i, table.models.index(r["model"])] = float(r["score"])
    cost = np.tile(table.mean_cost(), (n_new, 1))
    merged = replace(
        table,
        prompts=table.prompts + [r["prompt"] for r in usable],
        correct=np.vstack([table.correct, correct]),
        cost=np.vstack([table.cost, cost]),
        source=np.concatenate([table.source, np.array(["feedback"] * n_new, dtype=object)]),
        contaminated=np.concatenate([table.contaminated, np.zeros(n_new, dtype=bool)]),
        extra={},
    )
    return merged, n_new
