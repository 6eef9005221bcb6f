"""Connecting to Ray for ``collect --ray`` and ``eval --ray``: an existing cluster, or a local one.

``address``: None = ``$RAY_ADDRESS`` if set, else a Ray instance already running on this machine,
else a new local one; ``"local"`` = always a new local instance; ``"auto"`` = the cluster this
machine is a node of; ``"ray://HEAD:10001"`` = Ray Client; ``"HEAD:6379"`` = the head's GCS.
A session that this process started is shut down at the end; one it joined is left running.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import TierwiseError

INSTALL_HINT = "pip install 'tierwise[ray]'"


class RayUnavailable(TierwiseError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says how to fix it."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def load_runtime_env(path: str | Path | None) -> dict | None:
    """A Ray ``runtime_env`` from a JSON or YAML file (e.g. ``py_modules``, ``pip``, ``env_vars``)."""
    if path is None:
        return None
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RayUnavailable(f"--ray-runtime-env {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix == ".json":
            env = json.loads(text)
        else:
            import yaml

            env = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError are ValueErrors / subclass them
        raise RayUnavailable(f"--ray-runtime-env {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from None
    except Exception as exc:
        raise RayUnavailable(f"--ray-runtime-env {p}: cannot parse: {exc}") from None
    if not isinstance(env, dict):
        raise RayUnavailable(f"--ray-runtime-env {p}: must hold a mapping (py_modules, pip, env_vars, ...)")
    return env


class RaySession:
    """The connected ``ray`` module; ``started``: this command brought the cluster up (nothing to wait
    for: no autoscaler will add a bigger node)."""

    def __init__(self, ray, started: bool):
        self.ray, self.started = ray, started

    def check_fits(self, what: str, cpus: float, gpus: float = 0.0, hint: str = "") -> None:
        """A task or actor bigger than every node waits forever: an error on a cluster this command
        started, a warning on one that may still grow (an autoscaler)."""
        have = self.largest_node()
        if cpus <= have["CPU"] and gpus <= have["GPU"]:
            return
        msg = (f"{what} reserves {cpus:g} CPU / {gpus:g} GPU but the largest Ray node has "
               f"{have['CPU']:g} / {have['GPU']:g}{'; ' + hint if hint else ''}")
        if self.started:
            raise RayUnavailable(msg)
        print(f"warning: {msg} (waiting for the cluster to add a node that fits)", file=sys.stderr, flush=True)

    def largest_node(self) -> dict[str, float]:
        """The CPU and GPU count of the biggest live node (what one actor can reserve at most now)."""
        best = {"CPU": 0.0, "GPU": 0.0}
        for node in self.ray.nodes():
            if node.get("Alive"):
                res = node.get("Resources", {})
                for key in best:
                    best[key] = max(best[key], float(res.get(key, 0.0)))
        return best


@contextmanager
def ray_session(address: str | None = None, *, runtime_env: dict | None = None,
                num_cpus: int | None = None) -> Iterator[RaySession]:
    """Join or start Ray for the duration of a command (reusing a session already open in-process)."""
    ray = import_ray()
    if ray.is_initialized():
        yield RaySession(ray, started=False)
        return
    joining = (address not in (None, "local")) or (address is None and bool(os.environ.get("RAY_ADDRESS")))
    kwargs: dict = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if not joining:
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"
        raise RayUnavailable(f"cannot start or join Ray at {where}: {str(exc).splitlines()[0][:300]}") from None
    try:
        yield RaySession(ray, started=not joining)
    finally:
        ray.shutdown()
