"""Collect an outcome table on the user's own pyramid: every model answers every prompt, graded.

This is how a user without outcome data gets some: the resulting wide table (``correct|m``,
``cost|m``, ``tokens_in|m``, ``tokens_out|m``, ``latency_s|m``, ``logprob|m``) feeds ``tierwise
train`` / ``eval`` and the cascade's threshold calibration.

Runs take hours on a CPU, so they must survive interruption: every finished cell is committed to a
SQLite sidecar (``<out>.cells.sqlite``, WAL) the moment it is graded, keyed by (prompt hash, model
identity, grader settings). A rerun of the same command skips finished cells; Ctrl-C or kill -9 lose
at most the cells in flight. The wide table is (re)written, atomically, at the end.

Models run one after another, cheapest first, with up to ``concurrency`` requests in flight per
model: on a CPU box several llama.cpp models at once only fight over the same cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .backends.base import Backend, BackendError, ChatResult
from .errors import TierwiseError
from .graders import Grader, GraderError
from .promptsets import prompt_hash

CORRECT, COST, TOKENS_IN, TOKENS_OUT, LATENCY, LOGPROB, PRED = (
    "correct|", "cost|", "tokens_in|", "tokens_out|", "latency_s|", "logprob|", "pred|"
)
RETRIES = 2


class CollectError(TierwiseError, RuntimeError):
    """Collection cannot start or finish; the message names the file, model or field."""


@dataclass
class ModelSpec:
    """What collect needs from a pyramid model; built from ``tierwise.config.ModelConfig``."""

    name: str
    identity: str  # changes when the weights/endpoint change, so stale cells are not reused
    input_per_1m: float
    output_per_1m: float
    max_concurrency: int = 1
    factory: Callable[[], Backend] | None = None

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        from .prices import token_cost

        return token_cost(tokens_in, tokens_out, self.input_per_1m, self.output_per_1m)


def model_identity(cfg) -> str:
    """A string that changes when the model behind a name changes (weights hash, file, or endpoint)."""
    if getattr(cfg, "backend", None) == "llama_cpp":
        if cfg.embedded:
            from .weights import get

            return f"embedded:{cfg.embedded}:{get(cfg.embedded).sha256[:16]}"
        st = Path(cfg.path).stat()
        return f"gguf:{Path(cfg.path).name}:{st.st_size}"
    return f"openai:{cfg.endpoint}:{cfg.model}"


def specs_from_pyramid(pyramid, concurrency: int | None = None) -> list[ModelSpec]:
    from .backends import build_backend

    out = []
    for cfg in pyramid.chat_models:  # embedding models answer no prompts
        out.append(
            ModelSpec(
                name=cfg.name,
                identity=model_identity(cfg),
                input_per_1m=cfg.input_per_1m,
                output_per_1m=cfg.output_per_1m,
                max_concurrency=concurrency or cfg.max_concurrency or 1,
                factory=(lambda c=cfg: build_backend(c)),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# sidecar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    prompt_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    model_identity TEXT NOT NULL,
    settings TEXT NOT NULL,
    correct REAL NOT NULL,
    cost REAL NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    logprob REAL,
    pred TEXT,
    output TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (prompt_hash, model, model_identity, settings)
);
"""


@dataclass
class Cell:
    correct: float
    cost: float
    tokens_in: int
    tokens_out: int
    latency_s: float
    logprob: float | None
    pred: str | None
    output: str


class CellStore:
    """Finished cells, committed one by one so a crash loses only what was in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CollectError(f"{self.path}: not a usable cells sidecar ({exc}); delete it to start over") from None

    def done(self, model: ModelSpec, settings: str) -> dict[str, Cell]:
        rows = self.db.execute(
            "SELECT prompt_hash, correct, cost, tokens_in, tokens_out, latency_s, logprob, pred, output "
            "FROM cells WHERE model=? AND model_identity=? AND settings=?",
            (model.name, model.identity, settings),
        ).fetchall()
        return {r[0]: Cell(*r[1:]) for r in rows}

    def put(self, phash: str, model: ModelSpec, settings: str, cell: Cell) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                phash, model.name, model.identity, settings, cell.correct, cell.cost, cell.tokens_in,
                cell.tokens_out, cell.latency_s, cell.logprob, cell.pred, cell.output, time.time(),
            ),
        )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def sidecar_path(out: str | Path) -> Path:
    return Path(str(out) + ".cells.sqlite")


# --------------------------------------------------------------------------------------------
# running


@dataclass
class CollectReport:
    out: Path
    rows: int
    models: list[str]
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (model, item_id, error)
    accuracy: dict[str, float] = field(default_factory=dict)
    mean_cost: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0


async def _one_cell(backend: Backend, grader: Grader, item: dict, spec: ModelSpec) -> Cell:
    gen = grader.generation
    last: Exception | None = None
    for attempt in range(RETRIES + 1):
        try:
            started = time.perf_counter()
            result: ChatResult = await backend.chat(
                grader.messages(item),
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                logprobs=gen.logprobs,
                top_logprobs=gen.top_logprobs,
            )
            latency = result.latency_s or (time.perf_counter() - started)
            break
        except BackendError as exc:
            last = exc
            await asyncio.sleep(0.5 * (attempt + 1))
    else:
        raise last  # type: ignore[misc]
    grade = await grader.grade(item, result)
    conf = grader.confidence(result, grade)
    return Cell(
        correct=float(min(1.0, max(0.0, grade.score))),
        cost=spec.cost(result.tokens_in, result.tokens_out),
        tokens_in=int(result.tokens_in),
        tokens_out=int(result.tokens_out),
        latency_s=float(latency),
        logprob=None if conf is None or not math.isfinite(conf) else float(conf),
        pred=grade.extracted,
        output=result.text,
    )


class _Progress:
    """rich progress bar on a terminal; plain periodic lines otherwise (nohup logs)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.monotonic()
        self.last_line = 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("collect", total=total)
            self.bar.start()

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)
        elif self.enabled:
            print(f"[collect] {text}", file=sys.stderr, flush=True)

    def advance(self, n: int = 1, *, computed: bool = True) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
            return
        now = time.monotonic()
        if self.enabled and computed and (now - self.last_line > 30 or self.done == self.total):
            self.last_line = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"[collect] {self.done}/{self.total} cells, ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def reset_clock(self) -> None:
        self.start = time.monotonic()
        self.base = self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def run_collect(
    items: list[dict],
    models: list[ModelSpec],
    grader: Grader,
    out: str | Path,
    *,
    progress: bool = True,
    on_cell: Callable[[str, str], None] | None = None,
    sidecar: str | Path | None = None,
) -> CollectReport:
    """Run, grade and record every (item, model) cell not already in the sidecar; write the table."""
    if not items:
        raise CollectError("the prompt set is empty")
    if not models:
        raise CollectError("the pyramid has no models")
    for it in items:
        try:
            grader.check_item(it)
        except GraderError as exc:
            raise CollectError(f"{it.get('item_id', '?')}: {exc}") from None
    out = Path(out)
    started = time.monotonic()
    store = CellStore(sidecar or sidecar_path(out))
    settings = grader.settings_key()
    hashes = [prompt_hash(json.dumps(grader.messages(it), sort_keys=True)) for it in items]
    unique = list(dict.fromkeys(hashes))
    first_item = {h: items[hashes.index(h)] for h in unique}
    report = CollectReport(out=out, rows=len(items), models=[m.name for m in models])
    bar = _Progress(len(unique) * len(models), progress)
    try:
        for spec in models:
            done = store.done(spec, settings)
            todo = [h for h in unique if h not in done]
            report.reused += len(unique) - len(todo)
            bar.advance(len(unique) - len(todo), computed=False)
            if not todo:
                continue
            bar.describe(f"{spec.name} ({len(todo)} to run)")
            backend = spec.factory() if spec.factory else None
            if backend is None:
                raise CollectError(f"model {spec.name!r} has no backend")
            sem = asyncio.Semaphore(max(1, spec.max_concurrency))

            async def work(h: str, spec=spec, backend=backend, sem=sem) -> None:
                async with sem:
                    item = first_item[h]
                    try:
                        cell = await _one_cell(backend, grader, item, spec)
                    except (BackendError, GraderError) as exc:
                        report.failed.append((spec.name, str(item.get("item_id", h)), str(exc)[:200]))
                        bar.advance()
                        return
                    store.put(h, spec, settings, cell)
                    report.computed += 1
                    if on_cell is not None:
                        on_cell(spec.name, h)
                    bar.advance()

            try:
                await asyncio.gather(*(work(h) for h in todo))
            finally:
                await backend.aclose()
    finally:
        bar.close()
    write_table(items, hashes, models, store, settings, grader.name, out)
    store.close()
    report.elapsed_s = time.monotonic() - started
    _summarise(report, out)
    return report


def build_frame(items: list[dict], hashes: list[str], models: list[ModelSpec], store: CellStore, settings: str, grader_name: str):
    """The wide table as a DataFrame: one row per item, per-model column groups, NaN for missing cells."""
    import pandas as pd

    base = {
        "prompt": [it["prompt"] for it in items],
        "source": [str(it.get("source", "")) for it in items],
        "item_id": [str(it.get("item_id", "")) for it in items],
        "answer": [None if it.get("answer") is None else str(it["answer"]) for it in items],
        "grader": [grader_name] * len(items),
    }
    cols: dict[str, list] = dict(base)
    for spec in models:
        done = store.done(spec, settings)
        rows = [done.get(h) for h in hashes]
        nan = float("nan")
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if out.name.endswith(".gz"):
            import gzip

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


def _summarise(report: CollectReport, out: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(out, low_memory=False)
    for m in report.models:
        report.accuracy[m] = float(frame[CORRECT + m].mean())
        report.mean_cost[m] = float(frame[COST + m].mean())


def merge_tables(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Stack collected tables of the same models (e.g. one per grader) into one table."""
    import pandas as pd

    frames = []
    models: list[str] | None = None
    for p in paths:
        f = pd.read_csv(p, low_memory=False)
        ms = [c[len(CORRECT):] for c in f.columns if c.startswith(CORRECT)]
        if models is not None and ms != models:
            raise CollectError(f"{p}: models {ms} differ from the first table's {models}")
        models = ms
        frames.append(f)
    if not frames:
        raise CollectError("nothing to merge")
    out = Path(out)
    write_frame(pd.concat(frames, ignore_index=True), out)
    return out


def summary(path: str | Path):
    """Per (grader, model): rows, accuracy, mean cost, tokens and latency of a collected table."""
    import pandas as pd

    frame = pd.read_csv(path, low_memory=False)
    models = [c[len(CORRECT):] for c in frame.columns if c.startswith(CORRECT)]
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


if __name__ == "__main__":  # python -m tierwise.collect summary TABLE
    if len(sys.argv) != 3 or sys.argv[1] != "summary":
        sys.exit("usage: python -m tierwise.collect summary TABLE")
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary(sys.argv[2]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
