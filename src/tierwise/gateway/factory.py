"""Building the gateway for ``tierwise serve``, in one process or in each of ``--workers N``.

With workers, uvicorn starts N processes sharing the port; each calls :func:`app_from_env`, which
reads the serve options from ``TIERWISE_SERVE`` (set by the parent) and builds its own app: its
own models (a local GGUF model is loaded once per worker), engine and log writer (SQLite in WAL
mode takes several writers; Postgres too). What must agree across workers lives outside them: the
decision log in the database, per-key counters in Redis (``redis:``), which is why limits with
more than one worker need it: :func:`check_workers` refuses to start N workers with limited keys
and no Redis, and each worker's quota knows N, so a limited key that appears later (``tierwise keys
add``) has its requests refused (503 ``quota_unavailable``) instead of counted once per worker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from ._http import header_timeout

ENV = "TIERWISE_SERVE"


@dataclass
class ServeOptions:
    config: str | None = None
    router: str | None = None
    cascade: str | None = None
    log_prompts: bool = False
    workers: int = 1


def _pyramid(opts: ServeOptions):
    from ..config import Pyramid, default_pyramid

    return Pyramid.load(opts.config) if opts.config else default_pyramid()


def one_blas_thread() -> None:
    """Routing does small matrix products per request, many requests at once: BLAS's own threads
    only contend with the event loop and with other workers for the same cores (with wrk at 32
    connections on 2 cores, routed throughput rose ~10% with one worker and ~15% with two)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def build(opts: ServeOptions):
    """The app for these options (loads models, opens the log)."""
    from ..engine.build import load_router, wants_router_process
    from .app import create_app

    one_blas_thread()
    pyramid = _pyramid(opts)
    header_timeout(pyramid.header_timeout_s)
    router = load_router(pyramid, opts.router)
    app = create_app(pyramid, router=router, store_prompts=opts.log_prompts, cascade=opts.cascade,
                     router_process=wants_router_process(pyramid.router_process, router, opts.workers))
    quota = getattr(app.state.engine, "quota", None)
    if quota is not None:
        quota.workers = opts.workers  # limits it cannot keep exact across them: refused, not split
    settle_heap()
    return app


def settle_heap() -> None:
    """Everything loaded at start-up (router, encoder memo, models, modules) lives as long as the process:
    collected once, then frozen out of the garbage collector's scans, so the collections that requests
    trigger walk only what requests allocate (its effect on throughput: bench/gateway_bench.py)."""
    import gc

    gc.collect()
    gc.freeze()


def app_from_env():
    """uvicorn's factory in each worker process."""
    return build(ServeOptions(**json.loads(os.environ[ENV])))


def export(opts: ServeOptions) -> None:
    os.environ[ENV] = json.dumps(asdict(opts))


def check_workers(opts: ServeOptions, workers: int) -> dict[str, Any]:
    """Everything that can be wrong before N workers start, without loading a model: the config,
    the router and cascade files, the keys; and limits that only Redis can keep exact across them.
    Returns what the start-up line shows."""
    from ..decision_log import open_log
    from ..engine.build import load_cascade, load_router
    from .keys import Keys

    pyramid = _pyramid(opts)
    router = load_router(pyramid, opts.router)
    load_cascade(pyramid, opts.cascade)
    log = open_log(pyramid.log_target())
    try:
        keys = Keys(pyramid, log.url)
    finally:
        log.close()
    limited = bool(keys.quota.policies) or pyramid.max_pending_per_key is not None
    if workers > 1 and limited and not pyramid.redis:
        raise ConfigError(f"{opts.config or '<default pyramid>'}: per-key budgets and limits with --workers "
                          f"{workers} need shared counters: set `redis: redis://HOST:6379/0` (each worker would "
                          "otherwise enforce them on its own, letting a key spend N times its budget)")
    return {"models": pyramid.chat_names if hasattr(pyramid, "chat_names") else pyramid.names,
            "router": router.name, "log": log.url, "keys": len(keys.guard.api_keys),
            "admin": len(keys.guard.admin_keys), "redis": pyramid.redis}
