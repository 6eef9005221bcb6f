"""Placing a new model into a trained router from a few probe outcomes.

A new model is described by how it relates to the models the router already knows, in their
logit space: with ``L_j(x)`` the router's predicted logit of model ``j`` on prompt ``x`` and ``d(x)``
their mean (a shared difficulty axis, as in item response theory),

    logit P(new model answers x well) = t0 + t1 * d(x) + sum_j g_j * (L_j(x) - d(x)),

``t0`` its ability, ``t1`` how much it follows the shared difficulty (prior 1), ``g`` which known
models it resembles beyond that (prior 0). A Gaussian prior keeps ten probes meaningful (ability and
difficulty only) and lets a hundred say more; the fit is a penalised logistic regression (Newton),
with graded scores in [0, 1] as targets. Nothing else of the router changes: the prompt side is
frozen, the other models need no new outcomes.

:func:`select_probes` picks probes that represent the prompt population in the regressors of that
fit (the medoids of the biggest k-means clusters): the kinds of prompt the placement meets most.
"""

from __future__ import annotations

import numpy as np

from .base import QualityModel, QUALITY_MODELS, register

PRIOR_SD = {"ability": 3.0, "difficulty": 1.0, "resemblance": 0.5}
CLUSTERS = 100  # probe selection: candidates are clustered this finely, the biggest clusters probed
_EPS = 1e-4


def logits(P: np.ndarray) -> np.ndarray:
    P = np.clip(np.asarray(P, dtype=float), _EPS, 1 - _EPS)
    return np.log(P / (1 - P))


def design(L: np.ndarray) -> np.ndarray:
    """(n, m + 2) regressors [1, d, L - d] of the placement model from base logits ``L`` (n, m)."""
    d = L.mean(axis=1, keepdims=True)
    return np.hstack([np.ones((len(L), 1)), d, L - d])


def _prior(m: int, y_mean: float) -> tuple[np.ndarray, np.ndarray]:
    mu = np.concatenate([[float(logits(np.array([y_mean]))[0]), 1.0], np.zeros(m)])
    sd = np.concatenate([[PRIOR_SD["ability"], PRIOR_SD["difficulty"]], np.full(m, PRIOR_SD["resemblance"])])
    return mu, 1.0 / sd**2


def place(L: np.ndarray, y: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, float]:
    """Fit the new model on probes: base logits ``L`` (k, m), outcomes ``y`` (k,) in [0, 1].

    Returns ``(w, b)`` with ``logit P = L @ w + b`` (the regressors folded back onto the base logits).
    """
    L = np.asarray(L, dtype=float)
    y = np.asarray(y, dtype=float)
    m = L.shape[1]
    Phi = design(L)
    center = Phi.mean(axis=0)
    center[0] = 0.0
    Phi = Phi - center  # centred on the probes: the ability prior is about the probes' mean outcome
    mu, prec = _prior(m, float(np.clip(y.mean(), 0.02, 0.98)))
    theta = mu.copy()
    for _ in range(iterations):
        p = sigmoid(Phi @ theta)
        grad = Phi.T @ (p - y) + prec * (theta - mu)
        hess = (Phi * (p * (1 - p))[:, None]).T @ Phi + np.diag(prec)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    t0, t1, g = theta[0] - center @ theta, theta[1], theta[2:]
    return t1 / m + g - g.sum() / m, float(t0)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def select_probes(P: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` probe prompts that represent the candidates in the placement's regressors.

    ``P`` (n, m): the router's predicted quality of its known models on the candidate prompts. The
    candidates are clustered finely (k-means, ``max(k, CLUSTERS)`` clusters) on the standardised
    regressors ``[d, L - d]``; the prompt nearest the centre of each of the ``k`` biggest clusters is
    picked, biggest first: the most common kinds of prompt, one probe each, so a prefix of the
    result is the best smaller set. (Measured in ``bench/probe_onboarding.py`` against random probes,
    k-means with exactly ``k`` clusters and a Bayesian D-optimal design, which favours extreme
    prompts.) Selection only (offline): scikit-learn is fine here.
    """
    from sklearn.cluster import KMeans

    Z = design(logits(P))[:, 1:]
    Z = (Z - Z.mean(axis=0)) / (Z.std(axis=0) + 1e-9)
    k = min(int(k), len(Z))
    n_clusters = min(max(k, CLUSTERS), len(Z))
    km = KMeans(n_clusters, n_init=1, random_state=seed).fit(Z)
    picks = []
    for c in np.argsort(-np.bincount(km.labels_, minlength=n_clusters), kind="stable")[:k]:
        members = np.flatnonzero(km.labels_ == c)
        picks.append(int(members[np.argmin(((Z[members] - km.cluster_centers_[c]) ** 2).sum(axis=1))]))
    return np.array(picks, dtype=int)


@register("probed")
class ProbedQuality(QualityModel):
    """A trained quality model plus models placed from probes (``place``): their predictions are a
    function of the base model's, so the hot path adds one small product."""

    def __init__(self, base: QualityModel | None = None, W: np.ndarray | None = None, b: np.ndarray | None = None):
        self.base = base
        self.W = np.zeros((0, 0)) if W is None else np.asarray(W, dtype=float)  # (added, base models)
        self.b = np.zeros(0) if b is None else np.asarray(b, dtype=float)

    @classmethod
    def extend(cls, model: QualityModel, w: np.ndarray, b: float) -> "ProbedQuality":
        """``model`` with one more (placed) model appended; a ``ProbedQuality`` grows in place of nesting."""
        if isinstance(model, ProbedQuality):
            return cls(model.base, np.vstack([model.W, w[None, :]]), np.append(model.b, b))
        return cls(model, w[None, :], np.array([b]))

    def base_predict(self, X) -> np.ndarray:
        return self.base.predict(X)

    def fit(self, X, Y):
        """Refit the base on its own columns and re-place every added model on the rows it has outcomes for."""
        if self.base is None:
            raise ValueError("a 'probed' router is made by `tierwise train --add-model` on a trained router, not fitted")
        n_base = Y.shape[1] - len(self.b)
        self.base.fit(X, Y[:, :n_base])
        L = logits(self.base.predict(X))
        for j in range(len(self.b)):
            ok = np.isfinite(Y[:, n_base + j])
            self.W[j], self.b[j] = place(L[ok], Y[ok, n_base + j])
        return self

    def predict(self, X):
        P = self.base.predict(X)
        added = sigmoid(logits(P) @ self.W.T + self.b)
        return np.hstack([P, added])

    def get_state(self):
        params, arrays = self.base.get_state()
        out = {f"base.{k}": v for k, v in arrays.items()}
        out.update({"W": self.W, "b": self.b})
        return {"base_kind": self.base.kind, "base": params}, out

    @classmethod
    def from_state(cls, params, arrays):
        base_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}
        base = QUALITY_MODELS[params["base_kind"]].from_state(params["base"], base_arrays)
        return cls(base, arrays["W"], arrays["b"])
