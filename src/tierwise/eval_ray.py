"""``tierwise eval --ray``: every (router, fold) fit of a cross-validation as one Ray task.

The features, outcomes and fold ids go into the object store once; each task runs the local code
(:func:`tierwise.evaluate.fit_predict`: fit one router kind on the other folds, predict its fold),
so the pooled predictions and every metric are the local run's. A task whose worker dies is run
again by Ray (``max_retries``), on another node if its own is gone.

Bit-identical needs one more thing: float32 training (``mf``) sums in an order that depends on the
BLAS thread count, so each task runs with the driver's BLAS threads (and reserves as many CPUs).
``threads=1`` packs more tasks per node; the predictions may then differ from a local run in the
last float32 digits (~1e-7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .evaluate import FoldJob, fit_predict
from .ray_session import ray_session


def blas_threads() -> int:
    """The BLAS thread count numpy uses in this process (what a local run computes with)."""
    from threadpoolctl import threadpool_info

    return max((int(i.get("num_threads") or 1) for i in threadpool_info() if i.get("user_api") == "blas"), default=1)


def fit_predict_threads(job: FoldJob, X: np.ndarray, Y: np.ndarray, folds: np.ndarray, groups: np.ndarray | None,
                        threads: int) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return fit_predict(job, X, Y, folds, groups)


@dataclass
class RayFoldRunner:
    address: str | None = None  # see tierwise.ray_session
    runtime_env: dict | None = None
    threads: int | None = None  # BLAS threads (= CPUs reserved) per task; None: the driver's, for identical results
    max_retries: int = 3  # Ray runs a task again when its worker dies
    progress: Callable[[str], None] | None = None
    every_s: float = 5.0  # at most one progress line this often

    def __call__(self, jobs: list[FoldJob], X: np.ndarray, Y: np.ndarray, folds: np.ndarray,
                 groups: np.ndarray | None = None) -> list[np.ndarray]:
        with ray_session(self.address, runtime_env=self.runtime_env) as session:
            ray = session.ray
            threads = self.threads or blas_threads()
            session.check_fits("each (router, fold) fit", threads, hint="pass --ray-threads N")
            task = ray.remote(num_cpus=threads, max_retries=self.max_retries)(fit_predict_threads)
            inputs = [ray.put(a) for a in (X, Y, folds, groups)]
            refs = [task.remote(job, *inputs, threads) for job in jobs]
            self._wait(ray, refs)
            return ray.get(refs)

    def _wait(self, ray, refs: list) -> None:
        pending, last = list(refs), time.monotonic()
        while pending:
            _, pending = ray.wait(pending, num_returns=1, timeout=self.every_s)
            now = time.monotonic()
            if self.progress is not None and (now - last >= self.every_s or not pending):
                last = now
                self.progress(f"{len(refs) - len(pending)}/{len(refs)} (router, fold) fits done")
