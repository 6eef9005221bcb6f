"""The Ray runner: every model at once, one pool of Ray actors per model, cells graded where they run.

A local GGUF model's actors each reserve ``num_cpus`` = threads x loaded copies (and ``num_gpus``
when asked) and load the model once; an HTTP model gets one async actor that keeps the model's
``max_concurrency`` requests in flight. The driver (this process) only dispatches cells and
commits results to the cell store as they arrive, so resuming, the written table and failure
reports are exactly the local runner's; a worker that dies has its cells sent again
(``ray_pool``). Workers must be able to import tierwise: on a cluster, ship it with the
``runtime_env`` (docs/ray.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..graders import Grader
from ..ray_session import RaySession, ray_session
from .cells import Sink, Work
from .ray_pool import ModelPool, PoolConfig
from .ray_worker import CellWorker, code_fingerprint
from .spec import ModelSpec


@dataclass
class RayRunner:
    address: str | None = None  # see tierwise.ray_session (None: $RAY_ADDRESS, a running instance, or a new one)
    runtime_env: dict | None = None
    actors_per_model: int = 1  # local models; an HTTP model gets one async actor
    cpus_per_actor: int | None = None  # local models: threads per copy = CPUs reserved (default: n_threads)
    gpus_per_actor: float = 0.0
    max_restarts: int = 2  # Ray restarts a crashed actor in place this many times
    max_replacements: int = 2  # then the pool starts this many new actors in all
    max_attempts: int = 3  # a cell whose worker died this many times while running it fails
    pools: dict[str, ModelPool] = field(default_factory=dict)  # after run(): model name -> its pool

    name = "ray"

    def pool_config(self, spec: ModelSpec) -> PoolConfig:
        opts: dict = {"max_restarts": self.max_restarts, "max_task_retries": 0,
                      "max_concurrency": max(1, spec.max_concurrency)}
        size, threads = max(1, self.actors_per_model), None
        if spec.is_local:
            threads = self.cpus_per_actor
            copies = spec.config.max_concurrency or 1
            opts["num_cpus"] = (threads or spec.config.n_threads or 1) * copies
            if size > 1:
                opts["scheduling_strategy"] = "SPREAD"  # copies of a CPU-bound model on different nodes
        elif spec.config is not None:  # HTTP: waits on the network; the endpoint bounds the concurrency
            size, opts["num_cpus"] = 1, 0
        else:  # a backend built in code: reserve what was asked, or one CPU
            opts["num_cpus"] = self.cpus_per_actor or 1
        if self.gpus_per_actor and spec.is_local:
            opts["num_gpus"] = self.gpus_per_actor
        return PoolConfig(size=size, capacity=max(1, spec.max_concurrency), options=opts, n_threads=threads,
                          max_attempts=self.max_attempts, max_replacements=self.max_replacements)

    async def run(self, work: list[Work], grader: Grader, sink: Sink) -> None:
        todo = [(spec, cells) for spec, cells in work if cells]
        if not todo:
            return
        with ray_session(self.address, runtime_env=self.runtime_env) as session:
            remote_cls = session.ray.remote(CellWorker)
            fingerprint = code_fingerprint()
            pools = []
            for spec, cells in todo:
                cfg = self.pool_config(spec)
                _check_fits(session, spec, cfg)
                pools.append(ModelPool(session.ray, remote_cls, spec, cells, grader, sink, cfg, fingerprint))
            self.pools = {p.spec.name: p for p in pools}
            workers = sum(p.cfg.size for p in pools)
            sink.describe(f"ray: {len(pools)} model(s), {workers} worker(s)")
            await _all_or_none([p.run() for p in pools])


def _check_fits(session: RaySession, spec: ModelSpec, cfg: PoolConfig) -> None:
    session.check_fits(f"model {spec.name!r}: one Ray worker", float(cfg.options.get("num_cpus", 0)),
                       float(cfg.options.get("num_gpus", 0)), "pass --ray-cpus N (threads per worker) or --ray-gpus")


async def _all_or_none(coros) -> None:
    """Run the pools together; the first that fails stops the others (their actors are killed)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
