"""One model's pool of Ray workers: cells dispatched to free slots, a dead worker's cells sent again.

Each worker slot has a supervisor: it starts an actor (:class:`~.ray_worker.CellWorker`), waits
until the model is loaded, then runs ``capacity`` feeders that take cells from the pool's queue and
call the actor. When the actor dies (a crash, kill -9, its node lost, ``ray.kill``), every cell it
had in flight goes back on the queue, so the pool's other workers, or this one once it is back,
compute it: Ray restarts the actor in place (``max_restarts``); an actor that is gone for good is
replaced by a new one (``max_replacements`` per pool). A cell whose worker died ``max_attempts``
times while running it is reported failed (a prompt that crashes the model must not stop the run),
and so are the cells left when no worker can be had any more. The first worker that cannot start
at all (model file missing, tierwise not importable) stops the run with its error.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from ..graders import Grader
from .cells import Sink, failure_text
from .spec import CollectError, ModelSpec


@dataclass
class PoolConfig:
    size: int  # workers (actors) of this model
    capacity: int  # cells in flight per worker
    options: dict  # Ray actor options: num_cpus, num_gpus, max_restarts, max_concurrency, ...
    n_threads: int | None = None  # a local model's threads in the worker (None: the model's config)
    max_attempts: int = 3
    max_replacements: int = 2


@dataclass
class _Worker:
    handle: object
    dead: asyncio.Event = field(default_factory=asyncio.Event)
    busy: set = field(default_factory=set)  # feeders with a call in flight


async def _result(ref):
    """An ObjectRef's value in asyncio, through ``future()``: the same for a driver and a Ray Client."""
    return await asyncio.wrap_future(ref.future())


def _cause(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln.split(":")[0]]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:300]


class ModelPool:
    def __init__(self, ray, remote_cls, spec: ModelSpec, cells: list[tuple[str, dict]], grader: Grader,
                 sink: Sink, cfg: PoolConfig, fingerprint: str):
        from ray.exceptions import RayActorError, RayError

        self.ray, self.remote_cls, self.spec, self.grader, self.sink, self.cfg = ray, remote_cls, spec, grader, sink, cfg
        self._actor_error, self._ray_error = RayActorError, RayError
        self.fingerprint = fingerprint
        self.queue: asyncio.Queue = asyncio.Queue()
        for cell in cells:
            self.queue.put_nowait(cell)
        self.unresolved = len(cells)
        self.finished = asyncio.Event()
        self.attempts: Counter = Counter()
        self.replacements_left = cfg.max_replacements
        self.started_once = False
        self.lost = 0  # worker deaths seen
        self.handles: list = []  # every actor this pool created (killed when it ends)
        self.workers: list[dict] = []  # ready() of each start and restart: pid, node (newest last)

    # ---- the pool -----------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.unresolved:
            return
        supervisors = {asyncio.ensure_future(self._supervise()) for _ in range(max(1, self.cfg.size))}
        finished = asyncio.ensure_future(self.finished.wait())
        try:
            pending = set(supervisors)
            while not self.finished.is_set() and pending:
                done, pending = await asyncio.wait(pending | {finished}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(finished)
                for task in done - {finished}:
                    if task.exception() is not None:
                        raise task.exception()
            if not self.finished.is_set():  # every worker is gone for good
                self._fail_queued(f"no Ray worker left for {self.spec.name} ({self.lost} died)")
        finally:
            for task in (*supervisors, finished):
                task.cancel()
            await asyncio.gather(*supervisors, finished, return_exceptions=True)
            for handle in self.handles:
                self._kill(handle)

    def _resolve(self) -> None:
        self.unresolved -= 1
        if self.unresolved <= 0:
            self.finished.set()

    def _fail_queued(self, reason: str) -> None:
        while not self.queue.empty():
            phash, item = self.queue.get_nowait()
            self.sink.failed(self.spec, phash, item, reason)
            self._resolve()

    def _kill(self, handle) -> None:
        try:
            self.ray.kill(handle)
        except Exception:  # already dead, or the cluster is going away
            pass

    # ---- one worker slot ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            handle = self.remote_cls.options(**self.cfg.options).remote(self.spec, self.grader, self.cfg.n_threads)
            self.handles.append(handle)
            if await self._start(handle):
                while True:
                    await self._serve(handle)  # returns when the worker died
                    self.lost += 1
                    if not await self._start(handle):  # Ray restarts it in place, or it is gone for good
                        break
            self._kill(handle)
            if self.replacements_left <= 0:
                return
            self.replacements_left -= 1

    async def _start(self, handle) -> bool:
        """Wait until the worker has loaded the model (retried through Ray's restarts); False if it is gone."""
        try:
            info = await _result(handle.ready.options(max_task_retries=-1).remote())
        except self._actor_error as exc:
            if not self.started_once:
                raise CollectError(f"model {self.spec.name!r}: its Ray worker did not start: {_cause(exc)}") from None
            return False
        if info.get("fingerprint") != self.fingerprint:
            raise CollectError(
                f"model {self.spec.name!r}: the Ray worker on node {info.get('node', '?')[:12]} runs other tierwise "
                "code than this driver; ship the package with the runtime_env (docs/ray.md)")
        self.started_once = True
        self.workers.append(info)
        return True

    async def _serve(self, handle) -> None:
        worker = _Worker(handle)
        feeders = [asyncio.ensure_future(self._feed(worker)) for _ in range(max(1, self.cfg.capacity))]
        try:
            await worker.dead.wait()
            for f in feeders:  # idle feeders stop now; busy ones end as their calls fail
                if f not in worker.busy:
                    f.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)
        finally:
            for f in feeders:
                f.cancel()

    async def _feed(self, worker: _Worker) -> None:
        me = asyncio.current_task()
        while not worker.dead.is_set():
            phash, item = await self.queue.get()
            if worker.dead.is_set():
                self.queue.put_nowait((phash, item))
                return
            worker.busy.add(me)
            try:
                cell, error = await _result(worker.handle.run_cell.remote(phash, item))
            except self._actor_error as exc:
                worker.dead.set()
                self._again(phash, item, exc)
                return
            except self._ray_error as exc:  # the call raised: a bug, another worker would do the same
                cell, error = None, failure_text(exc)
            finally:
                worker.busy.discard(me)
            if cell is not None:
                self.sink.done(self.spec, phash, cell)
            else:
                self.sink.failed(self.spec, phash, item, error or "no answer")
            self._resolve()

    def _again(self, phash: str, item: dict, exc: BaseException) -> None:
        self.attempts[phash] += 1
        n = self.attempts[phash]
        if n >= self.cfg.max_attempts:
            self.sink.failed(self.spec, phash, item, f"its Ray worker died {n} times while running it "
                             f"(last: {_cause(exc)})")
            self._resolve()
            return
        self.sink.retried(self.spec, phash, _cause(exc))
        self.queue.put_nowait((phash, item))
