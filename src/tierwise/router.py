"""The public router: prompt -> features -> per-model quality -> the cheapest model worth calling.

``Router.fit(table)`` learns from an outcome table, ``Router.score(prompts)`` predicts per-model
quality, ``Router.route(prompt, knob)`` picks a model. A held-out slice of the training data is
kept as a *calibration curve* (knob -> traffic share, cost, quality), so a user can ask for a
target ("quality=0.95", "share=0.3", "cost=0.0004") instead of a raw knob, at fit time or per
request, without the data. ``save``/``load`` write a versioned, pickle-free artifact.
"""

from __future__ import annotations

import functools
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .decision import RULES, TARGET_HELP, Decision, choose, parse_target
from .errors import TierwiseError
from .routers import QualityModel, make_quality_model
from .routers.base import QUALITY_MODELS

ARTIFACT_FORMAT = "tierwise-router"
ARTIFACT_VERSION = 1
class ArtifactError(TierwiseError, ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


def _content_text(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def conversation_text(messages: Sequence[dict]) -> str:
    """Render a chat for routing: the last user turn first, then earlier turns newest first.

    The encoder caps the tokens it reads, so the request that has to be answered must come first;
    earlier turns still shift the embedding (a follow-up in a code conversation stays 'code').
    """
    turns = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    ordered = [] if last_user is None else [turns[last_user][1]]
    ordered += [text for i, (_, text) in reversed(list(enumerate(turns))) if i != last_user]
    return "\n".join(t for t in ordered if t)


class Router:
    """Encoder + quality model + costs + decision rule, with a calibration curve for targets."""

    def __init__(
        self,
        kind: str = "mf",
        *,
        rule: str = "cost_weight",
        knob: float | str | None = None,
        featurizer=None,
        **params,
    ):
        if kind not in QUALITY_MODELS:
            raise ValueError(f"unknown router kind {kind!r}; choose one of {sorted(QUALITY_MODELS)}")
        if rule not in RULES:
            raise ValueError(f"unknown decision rule {rule!r}; choose one of {RULES}")
        self.kind = kind
        self.rule = rule
        self.params = params
        self._featurizer = featurizer
        self._default_knob_spec = knob
        self.quality: QualityModel | None = None
        self.models: list[str] = []
        self.costs = np.zeros(0)
        self.calibration: dict[str, list[float]] = {}
        self.metadata: dict = {}
        self.default_knob = 0.0 if rule == "cost_weight" else 0.5

    # ------------------------------------------------------------------ naming
    @property
    def name(self) -> str:
        return self.metadata.get("name", self.kind)

    @property
    def featurizer(self):
        if self._featurizer is None:
            from .features import Featurizer

            self._featurizer = Featurizer()
        return self._featurizer

    # ------------------------------------------------------------------ training
    def fit(self, table, *, X: np.ndarray | None = None, holdout: float = 0.2, seed: int = 0,
            oof: np.ndarray | None = None) -> "Router":
        """Learn from an outcome table (contaminated rows and rows with no outcome are dropped).

        The calibration curve (knob -> cost, quality, traffic share; what targets resolve on) is
        recorded on out-of-sample predictions: ``oof``, cross-validated predictions for every fully
        evaluated row (what ``tierwise train`` passes: every row counts, so small tables calibrate
        stably), or else a ``holdout`` share of those rows. Then the model is refit on every row.
        Missing cells (e.g. feedback rows) are masked. Pass precomputed features as ``X``
        (row-aligned with ``table.trainable()``).
        """
        from .metrics import router_curve, single_model_points

        t = table.trainable()
        if len(t) < 20:
            raise ValueError(f"{table.path}: only {len(t)} usable rows; a router needs at least 20")
        self.models = list(t.models)
        self.costs = t.mean_cost()
        X = self.featurizer.transform(t.prompts) if X is None else X
        rng = np.random.default_rng(seed)
        complete = np.isfinite(t.correct).all(axis=1)
        order = rng.permutation(np.flatnonzero(complete))
        n_hold = int(len(t) * holdout)
        pred = None  # out-of-sample predictions for the rows ``hold``, if there are enough rows
        if oof is not None:
            hold = np.flatnonzero(complete)
            if oof.shape != (len(hold), len(self.models)):
                raise ValueError(f"oof predictions have shape {oof.shape}; expected {(len(hold), len(self.models))}")
            pred = np.asarray(oof, dtype=float)
        elif n_hold >= 10:
            hold = order[:n_hold]
            train = np.setdiff1d(np.arange(len(t)), hold)
            qm = make_quality_model(self.kind, **self.params).fit(X[train], t.correct[train])
            pred = qm.predict(X[hold])
        if pred is not None:
            grid = _fine_grid(self.rule)
            curve = router_curve(pred, t.correct[hold], t.cost[hold], self.rule, grid)
            singles = single_model_points(t.correct[hold], t.cost[hold])
            self.calibration = {
                "knobs": [float(k) for k in curve.knobs],
                "cost": curve.cost.tolist(),
                "quality": curve.quality.tolist(),
                "top_share": curve.top_share.tolist(),
                "best_single_quality": float(singles[:, 1].max()),
                "top_cost": float(singles[:, 0].max()),
                "rows": len(hold),
                "method": "cross-validated predictions" if oof is not None else f"{holdout:.0%} holdout",
            }
        self.quality = make_quality_model(self.kind, **self.params).fit(X, t.correct)
        self.metadata.update(
            {
                "name": self.kind,
                "models": self.models,
                "trained_rows": len(t),
                "training_data": {"path": str(table.path), "fingerprint": t.fingerprint(), "cost_unit": t.cost_unit},
                "features": self.featurizer.describe(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if self._default_knob_spec is not None:
            self.default_knob = self.parse_knob(str(self._default_knob_spec))
        return self

    # ------------------------------------------------------------------ inference
    def score(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Predicted quality per model: (m,) for one prompt, (n, m) for a list."""
        self._check_fitted()
        if isinstance(prompts, str):
            return self.quality.predict(self.featurizer.transform_one(prompts))[0]
        return self.quality.predict(self.featurizer.transform(list(prompts)))

    def route(self, text: str, knob: float | str | None = None, allowed: Sequence[str] | None = None) -> Decision:
        """Pick a model for one prompt. ``allowed`` restricts the candidates (context fit, health)."""
        q = self.score(text)
        k = self._knob(knob)
        mask = None
        if allowed is not None:
            allowed_set = set(allowed)
            mask = np.array([m in allowed_set for m in self.models])
            if not mask.any():
                raise ValueError("no allowed model is known to this router")
        idx = int(choose(q[None, :], self.costs, self.rule, k, mask)[0])
        scores = {m: float(v) for m, v in zip(self.models, q)}
        return Decision(model=self.models[idx], index=idx, scores=scores, rule=self.rule, knob=k, router=self.name)

    def route_batch(self, prompts: Sequence[str], knob: float | str | None = None) -> list[str]:
        idx = choose(self.score(list(prompts)), self.costs, self.rule, self._knob(knob))
        return [self.models[i] for i in idx]

    def _knob(self, knob) -> float:
        if knob is None:
            return self.default_knob
        if isinstance(knob, (int, float)):
            return float(knob)
        return self.parse_knob(knob)

    # ------------------------------------------------------------------ knob targets
    def parse_knob(self, spec: str) -> float:
        """A raw knob value, or a target resolved on the calibration curve (see ``TARGET_HELP``)."""
        return _parse_knob_cached(self, str(spec).strip())

    def _resolve_target(self, spec: str) -> float:
        if spec == "":
            return self.default_knob
        try:
            value = float(spec)
        except ValueError:
            pass
        else:
            if value < 0 or (self.rule == "threshold" and value > 1.0001):
                raise ValueError(f"knob {spec!r} out of range; {TARGET_HELP}")
            return value
        what, target = parse_target(spec)
        cal = self.calibration
        if not cal:
            raise ValueError("this router has no calibration curve; use a numeric knob")
        knobs = np.array(cal["knobs"])
        cost, quality, share = (np.array(cal[k]) for k in ("cost", "quality", "top_share"))
        if what == "quality":
            ok = quality >= target * cal["best_single_quality"] - 1e-12
            if not ok.any():  # unreachable: the best quality on offer, at its lowest cost
                ok = quality >= quality.max() - 1e-12
            return float(knobs[ok][np.argmin(cost[ok])])
        if what == "share":
            ok = share <= target + 1e-12
        elif what == "cost":
            ok = cost <= target + 1e-15
        else:  # budget
            ok = cost <= target * cal["top_cost"] + 1e-15
        if not ok.any():
            return float(knobs[int(np.argmin(cost))])  # nothing fits: the cheapest operating point
        cand = np.flatnonzero(ok)
        return float(knobs[cand[np.lexsort((cost[cand], -quality[cand]))[0]]])

    def calibrate(self, target: str) -> float:
        """Set the default knob from a target (e.g. ``"share=0.3"``) and return it."""
        self.default_knob = self.parse_knob(target)
        self.metadata["calibrated_target"] = target
        return self.default_knob

    def check_models(self, names: Sequence[str]) -> None:
        """Refuse a pyramid that is not the one this router was trained for."""
        missing = [m for m in self.models if m not in names]
        extra = [m for m in names if m not in self.models]
        if missing or extra:
            raise ValueError(
                f"router {self.name!r} was trained for models {self.models}; the pyramid has {list(names)}"
                + (f" (missing: {missing})" if missing else "")
                + (f" (not in router: {extra})" if extra else "")
            )

    def _check_fitted(self) -> None:
        if self.quality is None:
            raise RuntimeError("router is not fitted: call fit() or Router.load()")

    # ------------------------------------------------------------------ artifacts
    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        params, arrays = self.quality.get_state()
        meta = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "kind": self.kind,
            "rule": self.rule,
            "default_knob": self.default_knob,
            "models": self.models,
            "costs": self.costs.tolist(),
            "quality_params": params,
            "calibration": self.calibration,
            "metadata": self.metadata,
        }
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("router.json", json.dumps(meta, indent=1, default=float))
            zf.writestr("arrays.npz", buf.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, featurizer=None, *, check_encoder: bool = True) -> "Router":
        path = Path(path)
        if not path.exists():
            raise ArtifactError(path, "router artifact not found")
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("router.json"))
                arrays = dict(np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise ArtifactError(path, f"not a tierwise router artifact ({exc})") from None
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
            obj = cls(kind, rule=meta["rule"], featurizer=featurizer)
            obj.quality = QUALITY_MODELS[kind].from_state(meta["quality_params"], arrays)
            obj.models = [str(m) for m in meta["models"]]
            obj.costs = np.asarray(meta["costs"], dtype=float)
            if obj.costs.shape != (len(obj.models),):
                raise ArtifactError(path, f"{len(obj.models)} models but {obj.costs.size} costs")
            obj.calibration = meta.get("calibration") or {}
            obj.metadata = meta.get("metadata") or {}
            obj.default_knob = float(meta["default_knob"])
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
        return obj

    # ------------------------------------------------------------------ stand-in
    @classmethod
    def stand_in(cls, models: Sequence[str], costs: Sequence[float]) -> "Router":
        """A documented, untrained router for a pyramid with no outcome data yet.

        It uses only prompt length/number counts: longer, number-heavy prompts go up the pyramid.
        Its name says what it is (``stand-in:heuristic``) in every header and log row.
        """
        from .features import SurfaceFeaturizer
        from .routers.baselines import HeuristicQuality

        order = np.argsort(np.asarray(costs, dtype=float), kind="stable")
        obj = cls("heuristic", rule="threshold", featurizer=SurfaceFeaturizer())
        obj.models = [list(models)[i] for i in order]
        obj.costs = np.asarray(costs, dtype=float)[order]
        obj.quality = HeuristicQuality(len(obj.models))
        obj.metadata = {"name": "stand-in:heuristic", "models": obj.models}
        obj.default_knob = 0.5
        return obj

    def __repr__(self) -> str:
        return f"Router(kind={self.kind!r}, rule={self.rule!r}, models={self.models})"


@functools.lru_cache(maxsize=256)
def _parse_knob_cached(router: Router, spec: str) -> float:
    return router._resolve_target(spec)


def _fine_grid(rule: str) -> np.ndarray:
    from .decision import knob_grid

    return knob_grid(rule, 240)
