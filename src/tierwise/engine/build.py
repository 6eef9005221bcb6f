"""Building an engine from a pyramid config: slots, router, cascade thresholds, default knob.

Everything that can be wrong with the files is checked here, at start-up, with the file named:
a router trained for other models, cascade thresholds calibrated for another pyramid, a knob the
router cannot resolve. A gateway that starts can serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..backends.base import Backend
from ..errors import CascadeError, ConfigError
from .capabilities import declared
from .cascade import Cascade
from .health import Breaker
from .slot import Slot

if TYPE_CHECKING:
    from ..cascade import Thresholds
    from ..config import Pyramid
    from .engine import Engine


def build_slots(pyramid: "Pyramid", backends: dict[str, Backend] | None = None) -> list[Slot]:
    """The pyramid's models with their backends (built from config unless given, e.g. in tests)."""
    from ..backends import build_backend

    slots = []
    for m in pyramid.models:
        be = backends[m.name] if backends is not None and m.name in backends else build_backend(m)
        slots.append(Slot(
            name=m.name, backend=be, input_per_1m=m.input_per_1m, output_per_1m=m.output_per_1m,
            context_window=int(m.context_window or getattr(be, "context_window", 4096)),
            timeout_s=float(m.timeout_s), max_concurrency=int(m.max_concurrency or 1),
            capabilities=declared(m.capabilities, getattr(be, "capabilities", frozenset())),
            breaker=Breaker(m.breaker_failures, m.breaker_cooldown_s),
        ))
    return slots


def _warm(router: Any) -> None:
    """One decision at start-up, so the first client does not pay for the lazy parts (a trained ensemble's
    first decision imports scipy and fuses its MF seeds)."""
    try:
        router.route("warm-up")
    except Exception:  # noqa: BLE001 - a router that cannot decide is reported on each request (plan.routed)
        pass


def load_router(pyramid: "Pyramid", path: str | None = None) -> Any:
    """The trained router at ``path`` (or the pyramid's), else the documented stand-in."""
    from ..router import Router

    path = path or pyramid.router
    if path:
        router = Router.load(path)
        try:
            router.check_models(pyramid.chat_names)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        _warm(router)
        return router
    return Router.stand_in(pyramid.chat_names, [m.blended_per_1m for m in pyramid.chat_models])


def load_cascade(pyramid: "Pyramid", path: Any = None) -> tuple["Thresholds", str] | None:
    """Cascade thresholds from ``path`` (a file or :class:`Thresholds`) or the pyramid's ``cascade:``,
    checked against the pyramid so a file calibrated for other models stops the start-up."""
    from ..cascade import Thresholds

    path = path if path is not None else pyramid.cascade
    if path is None or path == "":
        return None
    if isinstance(path, Thresholds):
        th, source = path, str(path.meta.get("source") or "<thresholds>")
    else:
        th, source = Thresholds.load(path), str(path)
    if th.models != pyramid.chat_names:
        raise CascadeError(f"{source}: cascade thresholds are for models {th.models}, the pyramid has "
                           f"{pyramid.chat_names}; calibrate on a table collected from this pyramid "
                           "(`tierwise cascade calibrate`)")
    if th.confidence == "self_consistency" and int(th.meta.get("samples") or 0) < 1:
        raise CascadeError(f"{source}: confidence self_consistency needs meta.samples >= 1 (answers sampled per model)")
    return th, source


def is_trained(router: Any) -> bool:
    """False for the untrained stand-in (``Router.stand_in``), which a configured cascade replaces."""
    return not str(getattr(router, "name", "")).startswith("stand-in")


def wants_router_process(setting: str, router: Any, workers: int = 1) -> bool:
    """``router_process`` resolved for a gateway of ``workers`` processes: ``auto`` moves a trained router's
    decisions to a process of their own while the machine has a core to spare for it (the stand-in's
    decision costs less than sending it)."""
    if setting in ("on", "off"):
        return setting == "on"
    from .router_process import usable_cores

    return is_trained(router) and usable_cores() > workers


def default_knob(pyramid: "Pyramid", router: Any) -> Any:
    """The knob for ``model="tierwise"``: the pyramid's if the user set one, else the router's own.

    A trained router carries a calibrated default and the stand-in its own rule, so the config's
    built-in default must not override them; an explicit ``knob:`` in the YAML does.
    """
    if "knob" not in pyramid.model_fields_set:
        return None
    if isinstance(pyramid.knob, str):  # a target: resolved once, now, on the router's calibration curve
        try:
            return router.parse_knob(pyramid.knob)
        except ValueError as exc:
            raise ConfigError(f"knob {pyramid.knob!r}: {exc}") from None
    if getattr(router, "rule", pyramid.rule) != pyramid.rule:
        raise ConfigError(f"pyramid rule {pyramid.rule!r} with knob {pyramid.knob!r}, but router {router.name!r} "
                          f"uses rule {router.rule!r}; set a knob for {router.rule!r} or retrain")
    return pyramid.knob


def build_engine(cls, pyramid: "Pyramid", *, router: Any = None, backends: dict[str, Backend] | None = None,
                 cascade: Any = None, cascade_default: bool | None = None, store_prompts: bool = False,
                 max_pending: int | None = None, listeners=(), router_process: bool | None = None) -> "Engine":
    """An engine for a loaded pyramid; ``router``/``backends``/``cascade`` replace what the config says.

    ``router_process``: decide in a child process (``engine.router_process``); default: only when the
    pyramid says ``router_process: on`` (``auto`` is resolved by ``tierwise serve``, see
    :func:`wants_router_process`).

    ``cascade_default``: whether plain ``tierwise`` runs the cascade; default: when a cascade is
    configured and the router is the untrained stand-in.
    """
    loaded = load_cascade(pyramid, cascade)  # before any backend starts: a bad file fails fast
    router = router if router is not None else load_router(pyramid)
    knob = default_knob(pyramid, router)
    slots = build_slots(pyramid, backends)
    casc = None
    if loaded is not None:
        th, source = loaded
        casc = Cascade(th, samples=int(th.meta.get("samples") or 0), source=source)
    if cascade_default is None:
        cascade_default = casc is not None and not is_trained(router)
    if router_process is None:
        router_process = pyramid.router_process == "on"
    return cls(slots, router, cascade=casc, cascade_default=cascade_default, default_knob=knob,
               router_process=router_process,
               max_pending=max_pending or pyramid.max_pending, max_pending_per_key=pyramid.max_pending_per_key,
               store_prompts=store_prompts, listeners=listeners,
               default_models={e: getattr(pyramid, f"default_{e}_model") for e in ("embeddings", "completions")
                               if getattr(pyramid, f"default_{e}_model", None)})

