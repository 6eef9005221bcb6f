"""The decision log as a table: filtered, newest first, a page at a time; and one request in full.

Filters are exact (model, status or ``ok``/``error``, client key, API, fallbacks, cascade) or a
prefix of the request id (or the upstream's response id). The total is counted up to
``COUNT_CAP`` matches, so a filter over a huge range answers quickly ("10,000+").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.record import COLUMNS, from_row
from .sql import Reader, Scope

__all__ = ["Filters", "page", "detail", "COUNT_CAP", "PAGE_SIZES"]

COUNT_CAP = 10_000
PAGE_SIZES = (25, 50, 100, 200)
_LIST_COLUMNS = ("id", "ts", "requested_model", "model", "chosen", "status", "surface", "key_hash", "stream",
                 "tokens_in", "tokens_out", "latency_ms", "cost_usd", "error")


@dataclass(frozen=True)
class Filters:
    model: str | None = None
    status: str | None = None  # "ok", "error" or a status code
    key: str | None = None  # a key hash (admins; a client key only ever sees its own)
    surface: str | None = None
    fallbacks: bool = False
    cascade: bool = False
    search: str | None = None  # request id (or upstream id) prefix

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if self.model:
            parts.append("model = ?")
            params.append(self.model)
        if self.status == "ok":
            parts.append("status = 200")
        elif self.status == "error":
            parts.append("status <> 200")
        elif self.status:
            parts.append("status = ?")
            params.append(int(self.status))
        if self.key:
            parts.append("key_hash = ?")
            params.append(self.key)
        if self.surface:
            parts.append("COALESCE(surface, 'chat') = ?")
            params.append(self.surface)
        if self.fallbacks:
            parts.append("fallbacks NOT IN ('[]', '')")
        if self.cascade:
            parts.append("cascade_chain IS NOT NULL")
        if self.search:
            # a range on the text, not LIKE: an index-friendly prefix match that needs no escaping
            parts.append("((id >= ? AND id < ?) OR (upstream_id >= ? AND upstream_id < ?))")
            params += [self.search, self.search + "\uffff"] * 2
        return " AND ".join(parts), params


def page(reader: Reader, scope: Scope, filters: Filters, number: int = 0, size: int = 50) -> dict[str, Any]:
    """Page ``number`` (0 first) of the requests in scope matching ``filters``, newest first."""
    size = size if size in PAGE_SIZES else 50
    where, params = scope.where()
    extra, extra_params = filters.where()
    if extra:
        where, params = f"{where} AND {extra}", [*params, *extra_params]
    cols = ", ".join(_LIST_COLUMNS)
    fb_len = reader.json_length("fallbacks")
    with reader.snapshot():
        rows = reader.query(f"SELECT {cols}, CASE WHEN fallbacks NOT IN ('[]', '') THEN {fb_len} ELSE 0 END, "
                            f"cascade_chain IS NOT NULL, prompt IS NOT NULL FROM requests WHERE {where} "
                            f"ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?", [*params, size, number * size])
        total = int(reader.query(f"SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE {where} LIMIT ?) t",
                                 [*params, COUNT_CAP + 1])[0][0])
    items = []
    for r in rows:
        d = dict(zip(_LIST_COLUMNS, r))
        d["stream"] = bool(d["stream"])
        d["surface"] = d["surface"] or "chat"
        d["fallbacks"], d["cascade"], d["has_prompt"] = int(r[-3] or 0), bool(r[-2]), bool(r[-1])
        items.append(d)
    return {"items": items, "page": number, "size": size, "total": min(total, COUNT_CAP),
            "total_capped": total > COUNT_CAP, "filters": filters.__dict__}


def detail(reader: Reader, request_id: str, key_hash: str | None) -> dict[str, Any] | None:
    """One request with every logged field and its ratings; None when it is not there or (for a
    client key) was made with another key, which is the same answer: others' requests do not exist."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM requests WHERE id = ?"
    params: list[Any] = [request_id]
    if key_hash is not None:
        sql += " AND key_hash = ?"
        params.append(key_hash)
    rows = reader.query(sql, params)
    if not rows:
        return None
    row = from_row(rows[0])
    row["feedback"] = [{"ts": float(ts), "score": float(score)} for ts, score in reader.query(
        "SELECT ts, score FROM feedback WHERE request_id = ? ORDER BY ts", [request_id])]
    return row
