"""Outcome tables: who answered which prompt correctly, and at what cost.

The wide layout (one row per prompt, ``correct|<model>`` / ``cost|<model>`` columns) is the
interchange format of the whole project: ``collect`` writes it, ``eval`` and ``train`` read it.
Every problem with a file is raised as :class:`TableError` naming the file, so a user with a
bad export gets one line that says what to fix instead of a pandas traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import TierwiseError
from .prices import PriceBook, estimate_tokens

CORRECT = "correct|"
COST = "cost|"
SIZE = "size_b|"
TOKENS_IN = "tokens_in|"
TOKENS_OUT = "tokens_out|"
LATENCY = "latency_s|"
OUTCHARS = "outchars|"  # characters of the answer (some public tables); ~4 per token when tokens_out| is absent
LOGPROB = "logprob|"  # mean token log-probability of the answer (collect; the cascade's confidence)
PER_MODEL_PREFIXES = (CORRECT, COST, SIZE, TOKENS_IN, TOKENS_OUT, LATENCY, OUTCHARS)


class TableError(TierwiseError, ValueError):
    """A data file is unreadable or does not follow the outcome-table layout."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class OutcomeTable:
    """Prompts x models outcome matrix plus per-cell cost.

    ``correct`` is float in [0, 1] with NaN where a model was not evaluated; ``cost`` is the
    price of answering that prompt with that model (unit in ``cost_unit``), never NaN.
    """

    prompts: list[str]
    models: list[str]
    correct: np.ndarray
    cost: np.ndarray
    source: np.ndarray
    contaminated: np.ndarray
    path: str = "<memory>"
    cost_unit: str = "USD per request"
    cost_origin: dict[str, str] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def rows(self, index: np.ndarray | Sequence[int]) -> "OutcomeTable":
        """A new table with the selected rows (boolean mask or integer index)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            prompts=[self.prompts[i] for i in idx],
            correct=self.correct[idx],
            cost=self.cost[idx],
            source=self.source[idx],
            contaminated=self.contaminated[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    def with_models(self, names: Iterable[str]) -> "OutcomeTable":
        """Keep only the named models, in the given order."""
        names = list(names)
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise TableError(self.path, f"unknown model(s) {unknown}; the table has {self.models}")
        if len(set(names)) != len(names):
            raise TableError(self.path, f"model list {names} names a model twice")
        cols = [self.models.index(n) for n in names]
        return replace(
            self,
            models=names,
            correct=self.correct[:, cols],
            cost=self.cost[:, cols],
            cost_origin={n: self.cost_origin.get(n, "") for n in names},
        )

    def with_source(self, prefix: str) -> "OutcomeTable":
        mask = np.array([str(s).startswith(prefix) for s in self.source], dtype=bool)
        if not mask.any():
            known = sorted({str(s).split("/")[0] for s in self.source})
            raise TableError(self.path, f"no row has a source starting with {prefix!r} (sources: {known})")
        return self.rows(mask)

    def clean(self) -> "OutcomeTable":
        """Rows usable for training/evaluation: not contaminated, every model evaluated."""
        self._require_graded()
        keep = ~self.contaminated & ~np.isnan(self.correct).any(axis=1)
        return self.rows(keep)

    def trainable(self) -> "OutcomeTable":
        """Rows a router can learn from: not contaminated, at least one model evaluated."""
        self._require_graded()
        return self.rows(~self.contaminated & np.isfinite(self.correct).any(axis=1))

    def _require_graded(self) -> None:
        """Every model needs a graded, uncontaminated row to be learned or evaluated (a model whose
        collect cells all failed has an empty ``correct|`` column: no row would be complete)."""
        if not len(self):
            return
        usable = np.isfinite(self.correct[~self.contaminated]).any(axis=0)
        for j, m in enumerate(self.models):
            if not usable[j]:
                only = " outside contaminated rows" if np.isfinite(self.correct[:, j]).any() else ""
                raise TableError(self.path, f"column '{CORRECT}{m}' has no graded rows{only}: grade {m!r} on some "
                                            "prompts, or leave the model out (train/eval --models)")

    def mean_cost(self) -> np.ndarray:
        return self.cost.mean(axis=0)

    def prompt_tokens(self) -> np.ndarray:
        """(n,) input tokens per prompt as a router counts them at request time (``estimate_tokens``)."""
        return np.array([estimate_tokens(p) for p in self.prompts], dtype=float)

    def output_tokens(self) -> np.ndarray | None:
        """(n, m) answer length per cell: ``tokens_out|m``, else ``outchars|m`` / 4; NaN where unknown;
        None when the table records no answer length for any model."""
        cols = []
        for m in self.models:
            t = self.extra.get(TOKENS_OUT + m)
            if t is None and OUTCHARS + m in self.extra:
                t = self.extra[OUTCHARS + m] / 4.0
            cols.append(np.full(len(self), np.nan) if t is None else np.asarray(t, dtype=float))
        out = np.column_stack(cols) if cols else np.zeros((len(self), 0))
        return out if np.isfinite(out).any() else None

    def order_by_cost(self) -> "OutcomeTable":
        """Models sorted cheapest first: the pyramid's natural order (ties keep table order)."""
        order = np.argsort(self.mean_cost(), kind="stable")
        return self.with_models([self.models[i] for i in order])

    def fingerprint(self) -> str:
        """Content hash of what a router learns from, recorded in router artifacts."""
        import hashlib

        h = hashlib.sha256()
        h.update("\x1f".join(self.models).encode())
        h.update("\x1e".join(self.prompts).encode())
        h.update(np.ascontiguousarray(np.nan_to_num(self.correct, nan=-1.0)).tobytes())
        return h.hexdigest()[:16]


def _read_frame(path: Path, *, as_written: bool = False):
    """The file as a frame. ``as_written`` (prompt sets): values stay as the file has them, no type guessing
    (pandas made the gold answer "007" the number 7 and "3.10" 3.1, so exact grading failed)."""
    import pandas as pd

    if not path.exists():
        raise TableError(path, "file not found")
    try:
        if path.name.endswith((".jsonl", ".jsonl.gz")):  # utf-8-sig: a byte-order mark is not JSON
            return pd.read_json(path, lines=True, encoding="utf-8-sig",
                                **({"dtype": False} if as_written else {}))
        if path.name.endswith((".parquet",)):
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False, **({"dtype": str} if as_written else {}))
    except TableError:
        raise
    except Exception as exc:  # pandas raises a zoo of types; the user needs the file name
        raise TableError(path, f"cannot be read as a table ({type(exc).__name__}: {exc})") from None


def _raw_header(path: Path) -> list[str] | None:
    """The header as written (pandas silently renames duplicate columns to 'x.1')."""
    import csv
    import gzip

    if not path.name.endswith((".csv", ".csv.gz", ".tsv")):
        return None
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which pandas drops too
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as fh:
            return next(csv.reader(fh), None)
    except (OSError, EOFError, csv.Error):
        return None


def _as_numeric(path: Path, frame, column: str) -> np.ndarray:
    import pandas as pd

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(
            path, f"column {column!r} has a non-numeric value {raw.iloc[row]!r} (data row {row + 1})"
        )
    return values.to_numpy(dtype=float)


def load_table(
    path: str | Path,
    prices: PriceBook | str | Path | None = None,
    *,
    require_cost: bool = True,
) -> OutcomeTable:
    """Read and validate a wide outcome table (CSV/CSV.GZ/JSONL/Parquet).

    Cost per cell comes, in order of preference, from ``cost|<model>`` columns, from ``prices``
    (USD per 1M input/output tokens, times token counts), from the bundled price book, or from
    ``size_b|<model>`` / a parameter count in the model's name. ``cost_origin`` records which.
    """
    path = Path(path)
    frame = _read_frame(path)
    columns = [str(c) for c in frame.columns]
    if "prompt" not in columns:
        raise TableError(path, f"missing required column 'prompt' (columns: {columns[:8]}...)")
    header = _raw_header(path) or columns
    models = [c[len(CORRECT):] for c in header if c.startswith(CORRECT)]
    if not models:
        raise TableError(path, "no model columns: expected at least one 'correct|<model>' column")
    if any(not m for m in models):
        raise TableError(path, "a 'correct|' column has an empty model name")
    seen: set[str] = set()
    for m in models:
        key = m.strip().lower()
        if key in seen:
            raise TableError(path, f"duplicate model name {m!r}")
        seen.add(key)
    if len(frame) == 0:
        raise TableError(path, "the table has no rows")

    prompts = frame["prompt"]
    if prompts.isna().any():
        row = int(np.flatnonzero(prompts.isna().to_numpy())[0])
        raise TableError(path, f"empty prompt in data row {row + 1}")
    prompt_list = [str(p) for p in prompts]

    correct = np.column_stack([_as_numeric(path, frame, CORRECT + m) for m in models])
    finite = correct[~np.isnan(correct)]
    if finite.size == 0:
        raise TableError(path, "every outcome cell is empty")
    if finite.min() < 0 or finite.max() > 1:
        raise TableError(path, f"outcomes must lie in [0, 1]; found range [{finite.min()}, {finite.max()}]")

    source = (
        frame["source"].fillna("").astype(str).to_numpy()
        if "source" in columns
        else np.full(len(frame), "", dtype=object)
    )
    if "contaminated" in columns:
        cont = frame["contaminated"]
        contaminated = cont.map(lambda v: str(v).strip().lower() in {"true", "1", "1.0", "yes"}).to_numpy(bool)
    else:
        contaminated = np.zeros(len(frame), dtype=bool)

    extra: dict[str, np.ndarray] = {}
    for prefix in (TOKENS_IN, TOKENS_OUT, LATENCY, SIZE, LOGPROB, OUTCHARS):
        for m in models:
            if prefix + m in columns:
                extra[prefix + m] = _as_numeric(path, frame, prefix + m)
                if prefix in (TOKENS_IN, TOKENS_OUT, OUTCHARS):  # lengths that price a request
                    _check_costs(path, m, extra[prefix + m], f"column {prefix + m!r}", "length")
    orphans = [c for c in columns if c.startswith(PER_MODEL_PREFIXES) and c.split("|", 1)[1] not in models]
    if orphans:
        raise TableError(path, f"column(s) {orphans[:3]} name a model with no 'correct|' column")

    cost, origin, unit = _resolve_costs(path, frame, columns, models, prompt_list, extra, prices, require_cost)
    return OutcomeTable(
        prompts=prompt_list,
        models=models,
        correct=correct,
        cost=cost,
        source=source,
        contaminated=contaminated,
        path=str(path),
        cost_unit=unit,
        cost_origin=origin,
        extra=extra,
    )


def _resolve_costs(path, frame, columns, models, prompts, extra, prices, require_cost):
    n = len(prompts)
    book = prices if isinstance(prices, PriceBook) or prices is None else PriceBook.load(prices)
    cost = np.empty((n, len(models)))
    origin: dict[str, str] = {}
    prompt_tokens = None
    units = set()
    for j, m in enumerate(models):
        col = COST + m
        if col in columns and (book is None or m not in book):
            values = _as_numeric(path, frame, col)
            if np.isnan(values).all():
                raise TableError(path, f"column {col!r} is empty")
            _check_costs(path, m, values, f"column {col!r}")
            values = np.where(np.isnan(values), np.nanmean(values), values)
            cost[:, j] = values
            origin[m] = f"column {col}"
            # `tierwise collect` writes USD per request next to the token counts it priced
            units.add("USD" if TOKENS_IN + m in extra else "table units")
            continue
        price, why = (None, "")
        if book is not None:
            price, why = book.lookup(m, size_b=_size_of(extra, m))
        if price is None:
            from .prices import default_price_book

            price, why = default_price_book().lookup(m, size_b=_size_of(extra, m))
        if price is None:
            if require_cost:
                raise TableError(
                    path,
                    f"no cost for model {m!r}: add a 'cost|{m}' column or pass a price table (--prices)",
                )
            price, why = None, "unpriced (cost 1 per request)"
        if price is None:
            cost[:, j] = 1.0
        else:
            if prompt_tokens is None:
                prompt_tokens = np.array([estimate_tokens(p) for p in prompts], dtype=float)
            t_in = extra.get(TOKENS_IN + m)
            t_in = prompt_tokens if t_in is None else np.where(np.isnan(t_in), prompt_tokens, t_in)
            t_out = extra.get(TOKENS_OUT + m)
            if t_out is None and OUTCHARS + m in extra:
                t_out = extra[OUTCHARS + m] / 4.0
            default_out = book.output_tokens if book is not None else default_price_book().output_tokens
            t_out = np.full(n, float(default_out)) if t_out is None else np.where(np.isnan(t_out), default_out, t_out)
            cost[:, j] = price.request_cost(t_in, t_out)
            _check_costs(path, m, cost[:, j], f"token counts x price ({why})")
            units.add("USD per request")
        origin[m] = why
    unit = units.pop() if len(units) == 1 else "mixed: " + ", ".join(sorted(units))
    return cost, origin, unit


def _check_costs(path: Path, model: str, values: np.ndarray, what: str, kind: str = "cost") -> None:
    """Costs (and the token counts they are priced from) must be finite and >= 0 (NaN = not given); else a
    TableError naming the model, the value and its row."""
    bad = ~np.isnan(values) & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TableError(path, f"{what}: invalid {kind} {values[row]:g} for model {model!r} in data row {row + 1} "
                               f"({kind}s must be finite and >= 0)")


def _size_of(extra: dict[str, np.ndarray], model: str) -> float | None:
    sizes = extra.get(SIZE + model)
    if sizes is None:
        return None
    finite = sizes[~np.isnan(sizes)]
    if finite.size == 0:
        return None
    value = float(np.median(finite))
    return value if math.isfinite(value) and value > 0 else None


def load_prompts(path: str | Path) -> list[dict]:
    """Prompt sets for ``collect``: JSONL/CSV with ``prompt`` (or ``question``) and optional gold ``answer``."""
    path = Path(path)
    frame = _read_frame(path, as_written=True)
    columns = [str(c) for c in frame.columns]
    text_col = "prompt" if "prompt" in columns else "question" if "question" in columns else None
    if text_col is None:
        raise TableError(path, f"a prompt set needs a 'prompt' or 'question' column (columns: {columns})")
    records = []
    for i, row in enumerate(frame.to_dict("records")):
        text = row.get(text_col)
        if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
            raise TableError(path, f"empty prompt in data row {i + 1}")
        rec = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        rec["prompt"] = str(text)
        records.append(rec)
    if not records:
        raise TableError(path, "the prompt set has no rows")
    return records
