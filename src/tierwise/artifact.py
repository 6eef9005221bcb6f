"""Router artifacts: a versioned, pickle-free file (a zip of ``router.json`` and ``arrays.npz``).

:func:`save` writes one atomically (a ``.tmp`` beside it, renamed; never a half-written file left);
:func:`load` reads one and checks it whole: format and version, the quality model's kind, every
per-model array against the model list, the calibration curve, the hull guard, the encoder it was
trained with, and one prediction of the quality model, so a damaged or hand-edited file is an
``ArtifactError`` naming it at load, not an IndexError at the first request. Version 1 artifacts load
with per-model mean costs and no guard. ``Router.save`` / ``Router.load`` call these.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .calibration import HullGuard
from .errors import TierwiseError
from .routers.base import QUALITY_MODELS
from .routers.cost import CostModel

if TYPE_CHECKING:
    from .router import Router

ARTIFACT_FORMAT = "tierwise-router"
ARTIFACT_VERSION = 2  # 2: per-request cost model ("cost_model" + "cost.*" arrays) and the hull guard


class ArtifactError(TierwiseError, ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


# what a router's calibration curve holds (every artifact version has them): per-knob lists and scalars
_CALIBRATION_LISTS = ("knobs", "cost", "quality", "top_share")
_CALIBRATION_SCALARS = ("best_single_quality", "top_cost")


def check_output_path(path: str | Path) -> Path:
    """Refuse an output path nothing can be written to, before the work that produces it (``ArtifactError``
    naming it): a directory, or a parent that exists but is not a directory. Missing parents are created
    when writing."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(path, "is a directory; give a file path for the output")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArtifactError(path, f"cannot be written: {parent} is not a directory")
    return path


def save(router: "Router", path: str | Path) -> Path:
    """Write ``router`` as a versioned, pickle-free artifact (a zip of ``router.json`` and ``arrays.npz``)."""
    router._check_fitted()
    path = Path(path)
    params, arrays = router.quality.get_state()
    meta = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "kind": router.kind,
        "rule": router.rule,
        "default_knob": router.default_knob,
        "models": router.models,
        "costs": router.costs.tolist(),
        "quality_params": params,
        "cost_model": None,
        "calibration": router.calibration,
        "metadata": router.metadata,
    }
    if router.cost_model is not None:
        cparams, carrays = router.cost_model.get_state()
        meta["cost_model"] = cparams
        arrays = {**arrays, **{f"cost.{k}": v for k, v in carrays.items()}}
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # as `cascade calibrate` does
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("router.json", json.dumps(meta, indent=1, default=float))
            zf.writestr("arrays.npz", buf.getvalue())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a half-written artifact left beside the real one
        raise
    return path


def load(cls: type["Router"], path: str | Path, featurizer=None, *, check_encoder: bool = True) -> "Router":
    """The router saved at ``path``; every problem an ``ArtifactError`` naming the file, never at the first request."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(path, "router artifact not found")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("router.json"))
            arrays = dict(np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False))
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError, EOFError, RuntimeError,
            NotImplementedError) as exc:  # damaged bytes fail in zipfile, zlib, json or numpy
        raise ArtifactError(path, f"not a tierwise router artifact, or a damaged one ({type(exc).__name__}: "
                                  f"{exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(path, f"not a tierwise router artifact (format {got!r})")
    try:
        if int(meta.get("version", 0)) > ARTIFACT_VERSION:
            raise ArtifactError(path, f"artifact version {meta['version']} is newer than this tierwise "
                                      f"({ARTIFACT_VERSION}); upgrade")
        kind = meta["kind"]
        if kind not in QUALITY_MODELS:
            raise ArtifactError(path, f"unknown router kind {kind!r}")
        if featurizer is None and check_encoder:  # the shipped encoder's view it was trained on
            from .features import featurizer_for

            featurizer = featurizer_for((meta.get("metadata") or {}).get("features") or {})
        obj = cls(kind, rule=meta["rule"], featurizer=featurizer)
        costs = {k[5:]: v for k, v in arrays.items() if k.startswith("cost.")}
        arrays = {k: v for k, v in arrays.items() if not k.startswith("cost.")}
        obj.quality = QUALITY_MODELS[kind].from_state(meta["quality_params"], arrays)
        quality_state = (meta["quality_params"], arrays)  # for the width check below
        obj.models = [str(m) for m in meta["models"]]
        obj.costs = np.asarray(meta["costs"], dtype=float)
        if obj.costs.shape != (len(obj.models),):
            raise ArtifactError(path, f"{len(obj.models)} models but {obj.costs.size} costs")
        obj.cost_model = (CostModel.from_state(meta["cost_model"], costs) if meta.get("cost_model")
                          else CostModel.constant(obj.costs))  # version 1: the per-model mean
        obj.calibration = meta.get("calibration") or {}
        if "guard" in obj.calibration:
            obj.guard = HullGuard.from_json(obj.calibration["knobs"], obj.calibration["guard"])
        obj.metadata = meta.get("metadata") or {}
        obj.default_knob = float(meta["default_knob"])
        _check_consistent(obj, path)
    except ArtifactError:
        raise
    except KeyError as exc:
        raise ArtifactError(path, f"damaged router artifact: {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ArtifactError(path, f"damaged router artifact ({type(exc).__name__}: {exc})") from None
    want = obj.metadata.get("features", {})
    if check_encoder and want.get("encoder_fingerprint"):
        obj._featurizer = featurizer
        have = obj.featurizer.describe()
        if have["encoder_fingerprint"] != want["encoder_fingerprint"] or have["surface"] != want.get("surface", True):
            raise ArtifactError(
                path,
                f"built with encoder {want.get('encoder')}@{want['encoder_fingerprint']}, "
                f"but this install has {have['encoder']}@{have['encoder_fingerprint']}: retrain with `tierwise train`",
            )
    if check_encoder or featurizer is not None:  # the quality model's arrays, through a prediction
        obj._featurizer = featurizer
        try:  # by a throwaway copy: the router's own model stays as loaded (lazy caches unbuilt)
            probe = QUALITY_MODELS[kind].from_state(*quality_state)
            with np.errstate(all="ignore"):
                width = np.atleast_2d(probe.predict(obj.featurizer.transform_one("tierwise"))).shape[1]
        except Exception as exc:  # noqa: BLE001 - hand-edited arrays fail in any numpy call
            raise ArtifactError(path, f"damaged router artifact: its quality model cannot predict "
                                      f"({type(exc).__name__}: {exc})") from None
        if width != len(obj.models):
            raise ArtifactError(path, f"damaged router artifact: {len(obj.models)} models but the quality "
                                      f"model predicts {width}")
    return obj


def _check_consistent(router: "Router", path: Path) -> None:
    """Every per-model array of a loaded artifact has ``len(models)`` entries along its model axis, and
    the calibration curve has what targets resolve on (else an ``ArtifactError`` naming the file now,
    not an IndexError or KeyError at the first request)."""
    m = len(router.models)
    if not m:
        raise ArtifactError(path, "damaged router artifact: no models")
    if len(set(router.models)) != m:
        raise ArtifactError(path, f"damaged router artifact: models {router.models} repeat a name")
    if not math.isfinite(router.default_knob) and not (router.rule == "cost_weight" and router.default_knob == math.inf):
        raise ArtifactError(path, f"damaged router artifact: default knob {router.default_knob}")
    cm = router.cost_model
    for k in ("a", "b", "c", "w0", "floor", "mean"):
        v = getattr(cm, k, None)
        if v is not None and np.shape(v) != (m,):
            raise ArtifactError(path, f"damaged router artifact: {m} models but the cost model's {k!r} has "
                                      f"shape {np.shape(v)}")
    if getattr(cm, "W", None) is not None and (np.ndim(cm.W) != 2 or np.shape(cm.W)[1] != m):
        raise ArtifactError(path, f"damaged router artifact: {m} models but the cost model's 'W' has shape "
                                  f"{np.shape(cm.W)}")
    cal = router.calibration
    if not isinstance(cal, dict):
        raise ArtifactError(path, "damaged router artifact: 'calibration' is not an object")
    if cal:
        missing = [k for k in (*_CALIBRATION_LISTS, *_CALIBRATION_SCALARS) if k not in cal]
        if missing:
            raise ArtifactError(path, f"damaged router artifact: the calibration curve lacks {missing}")
        n = len(cal["knobs"])
        short = [k for k in _CALIBRATION_LISTS if not isinstance(cal[k], list) or len(cal[k]) != n]
        if not n or short:
            raise ArtifactError(path, f"damaged router artifact: the calibration curve's {short or ['knobs']} "
                                      f"do not have one value per knob ({n})")
        for k in _CALIBRATION_SCALARS:
            if not isinstance(cal[k], (int, float)) or isinstance(cal[k], bool):
                raise ArtifactError(path, f"damaged router artifact: the calibration's {k!r} is not a number")
    if router.guard is not None:
        g = router.guard
        if not (len(g.lo) == len(g.hi) == len(g.p) == len(g.knobs)) or (
                np.concatenate([g.lo, g.hi]) >= m).any() or (np.concatenate([g.lo, g.hi]) < -1).any():
            raise ArtifactError(path, f"damaged router artifact: the hull guard does not fit {m} models and "
                                      f"{len(g.knobs)} knobs")
