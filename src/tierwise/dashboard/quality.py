"""Routing quality: what users said (``POST /v1/feedback``) per model and over time, whether the
router's confidence was right (its predicted score for the answering model against the feedback,
in bins: a calibration plot), and how often its decision was a close call (the margin between the
best and second-best predicted score).

A request rated more than once counts with its latest rating (as ``tierwise train --feedback``
learns from it). Requests are taken by their own time, so a range means "requests made then".
"""

from __future__ import annotations

from typing import Any

from .sql import Reader, Scope, answered, routed

__all__ = ["quality", "CALIBRATION_BINS", "MARGIN_WIDTH"]

CALIBRATION_BINS = 10
MARGIN_WIDTH = 0.01  # histogram bin of the top-two margin
MARGIN_BINS = 30  # margins of 0.30 and more share the last bin


def _rated(reader: Reader, scope: Scope) -> tuple[str, list[Any]]:
    """A query of the rated answered requests in scope: model, ts, score (latest), predicted."""
    where, params = scope.where("r")
    latest = ("SELECT f.request_id, f.score FROM feedback f WHERE NOT EXISTS "
              "(SELECT 1 FROM feedback g WHERE g.request_id = f.request_id AND g.ts > f.ts)")
    sql = (f"SELECT r.model AS model, r.ts AS ts, fb.score AS score, "
           f"{reader.json_number('r.scores', 'r.model')} AS predicted "
           f"FROM ({latest}) fb JOIN requests r ON r.id = fb.request_id WHERE {answered('r')} AND {where}")
    return sql, params


def _per_model(reader: Reader, rated: str, params: list[Any]) -> list[dict[str, Any]]:
    rows = reader.query(f"SELECT model, COUNT(*), AVG(score), AVG(predicted), COUNT(predicted) FROM ({rated}) t "
                        "GROUP BY model ORDER BY COUNT(*) DESC", params)
    return [{"model": m, "rated": int(n), "mean_feedback": float(fb),
             "mean_predicted": None if pred is None else float(pred), "predicted_rated": int(n_pred)}
            for m, n, fb, pred, n_pred in rows]


def _over_time(reader: Reader, rated: str, params: list[Any], step: int) -> dict[str, Any]:
    sql = (f"SELECT {reader.floor('ts / ?')} AS b, model, COUNT(*), AVG(score) FROM ({rated}) t "
           "GROUP BY 1, 2 ORDER BY 1")
    series: dict[str, list[list[float]]] = {}
    for b, model, n, mean in reader.query(sql, [step, *params]):
        series.setdefault(model, []).append([float(b) * step, float(mean), int(n)])
    return {"step": step, "models": series}  # per model: [bucket start, mean feedback, ratings]


def _calibration(reader: Reader, rated: str, params: list[Any]) -> dict[str, Any]:
    sql = (f"SELECT {reader.floor(f'predicted * {CALIBRATION_BINS}')} AS bin, COUNT(*), AVG(predicted), AVG(score) "
           f"FROM ({rated}) t WHERE predicted IS NOT NULL GROUP BY 1")
    bins: dict[int, list[float]] = {}
    for b, n, pred, fb in reader.query(sql, params):
        i = min(max(int(b), 0), CALIBRATION_BINS - 1)  # a score of exactly 1.0 joins the top bin
        n0, p0, f0 = bins.get(i, [0, 0.0, 0.0])
        bins[i] = [n0 + int(n), p0 + float(pred) * int(n), f0 + float(fb) * int(n)]
    out = [{"lo": i / CALIBRATION_BINS, "hi": (i + 1) / CALIBRATION_BINS, "rated": int(n),
            "mean_predicted": p / n, "mean_feedback": f / n} for i, (n, p, f) in sorted(bins.items())]
    total = sum(b["rated"] for b in out)
    ece = sum(b["rated"] * abs(b["mean_predicted"] - b["mean_feedback"]) for b in out) / total if total else None
    return {"bins": out, "rated": total, "expected_calibration_error": ece}


def _margins(reader: Reader, scope: Scope, thin: float) -> dict[str, Any]:
    """The top-two predicted score margin of every routed request in scope, as a histogram."""
    where, params = scope.where("r")
    value = reader.number("v.value")
    scores = reader.json_object_values("r.scores", "v")
    top = f"(SELECT MAX({value}) FROM {scores})"
    second = f"(SELECT {value} FROM {scores} ORDER BY 1 DESC LIMIT 1 OFFSET 1)"
    inner = (f"SELECT {top} - {second} AS margin FROM requests r WHERE {routed('r')} AND r.scores NOT IN ('{{}}', '') "
             f"AND r.cascade_chain IS NULL AND {where} {reader.no_inline()}")
    sql = (f"SELECT {reader.floor('margin / ?')} AS bin, COUNT(*), SUM(CASE WHEN margin < ? THEN 1 ELSE 0 END) "
           f"FROM ({inner}) t WHERE margin IS NOT NULL GROUP BY 1")
    hist = [0] * MARGIN_BINS
    total = thin_n = 0
    for b, n, below in reader.query(sql, [MARGIN_WIDTH, thin, *params]):
        hist[min(max(int(b), 0), MARGIN_BINS - 1)] += int(n)
        total += int(n)
        thin_n += int(below or 0)
    return {"width": MARGIN_WIDTH, "histogram": hist, "requests": total, "thin": thin_n, "threshold": thin,
            "thin_share": thin_n / total if total else None}


def quality(reader: Reader, scope: Scope, step: int, thin: float = 0.05) -> dict[str, Any]:
    """Everything the quality page shows, for the requests in ``scope``."""
    with reader.snapshot():
        rated, params = _rated(reader, scope)
        per_model = _per_model(reader, rated, params)
        n = sum(m["rated"] for m in per_model)
        mean = sum(m["mean_feedback"] * m["rated"] for m in per_model) / n if n else None
        return {"rated": n, "mean_feedback": mean, "models": per_model,
                "over_time": _over_time(reader, rated, params, step),
                "calibration": _calibration(reader, rated, params), "margins": _margins(reader, scope, thin)}
