"""The overview's sums, in the database: one GROUP BY (model, status, surface) along the covering
index ``requests_groups`` (in index order, so nothing is sorted), the rare fallback and cascade rows
through their partial indexes, and the models' mean predicted quality over the latest requests.
"""

from __future__ import annotations

from typing import Any

from .sql import Reader, Scope, routed, time_index

__all__ = ["groups", "fallbacks", "cascade", "predicted_quality", "BEST_SINGLE_SAMPLE"]

# the best single model is the one with the highest mean predicted quality over this many of the
# latest routed requests in range (which model is best barely moves past a few thousand)
BEST_SINGLE_SAMPLE = 20_000


def groups(reader: Reader, scope: Scope, small: bool) -> list[dict[str, Any]]:
    where, params = scope.where()
    hint = reader.index(time_index(scope) if small else "requests_groups")
    rows = reader.query(
        "SELECT model, status, surface, COUNT(*), SUM(cost_usd), SUM(tokens_in), SUM(tokens_out) "
        f"FROM requests{hint} WHERE {where} GROUP BY model, status, surface", params)
    keys = ("model", "status", "surface", "requests", "cost_usd", "tokens_in", "tokens_out")
    out = []
    for row in rows:
        g = dict(zip(keys, row))
        g["status"] = int(g["status"])
        g["surface"] = g["surface"] or "chat"
        for k in ("requests", "tokens_in", "tokens_out"):
            g[k] = int(g[k] or 0)
        g["cost_usd"] = float(g["cost_usd"] or 0.0)
        g["ok"] = g["status"] == 200 and bool(g["model"])
        out.append(g)
    return out


def fallbacks(reader: Reader, scope: Scope) -> dict[str, Any]:
    where, params = scope.where("r")
    hint = reader.index("requests_fallbacks")
    has = "r.fallbacks NOT IN ('[]', '')"
    (requests, total), = reader.query(f"SELECT COUNT(*), SUM({reader.json_length('r.fallbacks')}) FROM requests r{hint} "
                                      f"WHERE {has} AND {where}", params)
    by_model: dict[str, dict[str, int]] = {}
    sql = (f"SELECT {reader.element('f', 'model')}, {reader.element('f', 'reason')}, COUNT(*) FROM requests r{hint}, "
           f"{reader.json_elements('r.fallbacks', 'f')} WHERE {has} AND {where} GROUP BY 1, 2")
    for model, reason, n in reader.query(sql, params):
        by_model.setdefault(str(model), {})[str(reason)] = int(n)
    return {"requests": int(requests or 0), "fallbacks": int(total or 0), "failed": by_model}


def cascade(reader: Reader, scope: Scope) -> dict[str, Any]:
    """Cascade requests: how many needed more than one model, models called, and the baseline's token
    correction (a cascade row's tokens are totals over every model it called; the baseline uses the
    kept answer's own, as summarize's ``_answer_tokens``). The kept step is the chain's last (the
    cascade stops there), so its fields are read directly; the chain is searched only when it is not."""
    where, params = scope.where("r")
    last = {f: reader.last_element("r.cascade_chain", f, number=f != "outcome")
            for f in ("outcome", "tokens_in", "tokens_out")}
    c = "c"
    search = {f: (f"(SELECT {reader.element(c, f, number=True)} FROM {reader.json_elements('t.chain', c)} "
                  f"WHERE {reader.element(c, 'outcome')} = 'kept' AND {reader.element(c, 'tokens_in')} IS NOT NULL "
                  f"ORDER BY {c}.key LIMIT 1)") for f in ("tokens_in", "tokens_out")}
    last_kept = "t.last_outcome = 'kept' AND t.last_in IS NOT NULL"
    kept_in = f"CASE WHEN {last_kept} THEN t.last_in ELSE {search['tokens_in']} END"
    kept_out = f"CASE WHEN {last_kept} THEN t.last_out ELSE {search['tokens_out']} END"
    # OFFSET 0 keeps both databases from inlining the inner query (which would parse the JSON again per use)
    inner = (f"SELECT r.cascade_chain AS chain, {reader.json_length('r.cascade_chain')} AS steps, "
             f"{last['outcome']} AS last_outcome, {last['tokens_in']} AS last_in, {last['tokens_out']} AS last_out, "
             f"CASE WHEN {routed('r')} THEN 1 ELSE 0 END AS ok, COALESCE(r.tokens_in, 0) AS tin, "
             f"COALESCE(r.tokens_out, 0) AS tout FROM requests r{reader.index('requests_cascade')} "
             f"WHERE r.cascade_chain IS NOT NULL AND {where} {reader.no_inline()}")
    sql = (f"SELECT COUNT(*), SUM(CASE WHEN steps > 1 THEN 1 ELSE 0 END), SUM(steps), "
           f"SUM(CASE WHEN ok = 1 AND kin IS NOT NULL THEN kin - tin ELSE 0 END), "
           f"SUM(CASE WHEN ok = 1 AND kin IS NOT NULL THEN COALESCE(kout, 0) - tout ELSE 0 END) "
           f"FROM (SELECT t.*, {kept_in} AS kin, {kept_out} AS kout FROM ({inner}) t) k")
    n, esc, steps, d_in, d_out = reader.query(sql, params)[0]
    return {"requests": int(n or 0), "escalated": int(esc or 0), "models_called": int(steps or 0),
            "baseline_tokens_delta": (int(d_in or 0), int(d_out or 0))}


def predicted_quality(reader: Reader, scope: Scope, models: list[str]) -> dict[str, float]:
    """Mean predicted quality per model over the latest routed requests in range."""
    if not models:
        return {}
    where, params = scope.where()
    cols = ", ".join(f"AVG({reader.json_number('scores', '?')})" for _ in models)
    sql = (f"SELECT COUNT(*), {cols} FROM (SELECT scores FROM requests{reader.index(time_index(scope))} "
           f"WHERE {where} AND {routed()} "
           f"AND scores NOT IN ('{{}}', '') AND cascade_chain IS NULL ORDER BY ts DESC LIMIT ?) t")
    row = reader.query(sql, [*models, *params, BEST_SINGLE_SAMPLE])[0]
    means = {m: float(v) for m, v in zip(models, row[1:]) if v is not None}
    return {"sample": int(row[0] or 0), "mean_predicted_quality": means}
