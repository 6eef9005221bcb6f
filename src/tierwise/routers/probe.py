"""Placing a new model into a trained router from a few probe outcomes.

A new model is described by how it relates to the models the router already knows, in their
logit space: with ``L_j(x)`` the router's predicted logit of model ``j`` on prompt ``x`` and ``d(x)``
their mean (a shared difficulty axis, as in item response theory),

    logit P(new model answers x well) = t0 + t1 * d(x) + sum_j g_j * (L_j(x) - d(x)),

``t0`` its ability, ``t1`` how much it follows the shared difficulty (prior 1), ``g`` which known
models it resembles beyond that (prior 0), restricted to the ``RANK`` main directions in which the
known models differ on the probes. A Gaussian prior keeps ten probes meaningful (ability and
difficulty only) and lets a hundred say more; the fit is a penalised logistic regression (Newton),
with graded scores in [0, 1] as targets. Nothing else of the router changes: the prompt side is
frozen, the other models need no new outcomes. The router decides on a *cautious* estimate of the
placed model, its posterior mean minus ``CAUTION`` standard deviations (:func:`cautious_logits`): a
placement from ten probes is uncertain, and acting on its mean routes traffic on a lucky draw.

:func:`select_probes` picks probes that represent the prompt population in the regressors of that
fit (the medoids of the biggest k-means clusters): the kinds of prompt the placement meets most.
"""

from __future__ import annotations

import numpy as np

from .base import QualityModel, QUALITY_MODELS, register

PRIOR_SD = {"ability": 3.0, "difficulty": 1.0, "resemblance": 0.5}
RANK = 3  # resemblance directions fitted from probes (bench/probe_onboarding.py: 3 vs all 28 on mmlu_pro, +1-4 points)
CAUTION = 1.0  # a placed model decides on its posterior mean minus this many standard deviations
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


def place(L: np.ndarray, y: np.ndarray, iterations: int = 30, rank: int | None = None) -> tuple[np.ndarray, float]:
    """Fit the new model on probes: base logits ``L`` (k, m), outcomes ``y`` (k,) in [0, 1].

    Returns ``(w, b)`` with ``logit P = L @ w + b`` (the regressors folded back onto the base logits).
    """
    w, b, _ = place_posterior(L, y, iterations, rank)
    return w, b


def place_posterior(L: np.ndarray, y: np.ndarray, iterations: int = 30, rank: int | None = None
                    ) -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`place` plus the posterior covariance (m + 1, m + 1) of ``[b, w]`` (Laplace approximation:
    the inverse Hessian of the penalised log-likelihood at its mode, mapped onto ``b`` and ``w``).

    ``rank`` (default ``RANK``): the resemblance ``g`` lies in the span of the probes' top principal
    directions of ``L - d``; 0 lets it range over every known model."""
    rank = RANK if rank is None else int(rank)
    L = np.asarray(L, dtype=float)
    y = np.asarray(y, dtype=float)
    m = L.shape[1]
    Phi = design(L)
    V = np.eye(m)
    if 0 < rank < m:  # resemblance along the probes' top principal directions of L - d only
        R = Phi[:, 2:] - Phi[:, 2:].mean(axis=0)
        V = np.linalg.svd(R, full_matrices=False)[2][:rank].T
        Phi = np.hstack([Phi[:, :2], Phi[:, 2:] @ V])
    center = Phi.mean(axis=0)
    center[0] = 0.0
    Phi = Phi - center  # centred on the probes: the ability prior is about the probes' mean outcome
    mu, prec = _prior(V.shape[1], float(np.clip(y.mean(), 0.02, 0.98)))
    theta = mu.copy()
    for _ in range(iterations):
        p = sigmoid(Phi @ theta)
        grad = Phi.T @ (p - y) + prec * (theta - mu)
        hess = (Phi * (p * (1 - p))[:, None]).T @ Phi + np.diag(prec)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    p = sigmoid(Phi @ theta)
    hess = (Phi * (p * (1 - p))[:, None]).T @ Phi + np.diag(prec)
    # [b, w] = A @ theta: b = theta0 - center @ theta, w = theta1 / m + g - sum(g) / m
    A = np.zeros((m + 1, V.shape[1] + 2))
    A[0] = -center
    A[0, 0] += 1.0
    A[1:, 1] = 1.0 / m
    A[1:, 2:] = (np.eye(m) - 1.0 / m) @ V
    wb = A @ theta
    cov = A @ np.linalg.solve(hess, A.T)
    return wb[1:], float(wb[0]), (cov + cov.T) / 2


def cautious_logits(L: np.ndarray, W: np.ndarray, b: np.ndarray, S: np.ndarray, caution: float) -> np.ndarray:
    """Placed models' logits (n, added) lowered by ``caution`` posterior standard deviations.

    ``S`` (added, m + 1, m + 1): each placed model's covariance of ``[b, w]``. With few probes a
    placement is uncertain; deciding on its posterior mean sends traffic to a model on the strength of
    a lucky draw of probes (measured: below the router without the new model at K = 10 on a 29-model
    table). Deciding on a lower bound uses the model where the probes make it likely to be good, and
    converges to the mean as probes accumulate (the bound's width shrinks like 1/sqrt(K))."""
    mean = L @ W.T + b
    if caution <= 0 or not len(S):
        return mean
    Z = np.hstack([np.ones((len(L), 1)), L])
    var = np.einsum("ni,jik,nk->nj", Z, S, Z)
    return mean - caution * np.sqrt(np.maximum(var, 0.0))


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
    n_clusters = min(max(k, CLUSTERS), len(np.unique(Z, axis=0)))  # no more clusters than distinct points
    km = KMeans(n_clusters, n_init=1, random_state=seed).fit(Z)
    # members of each non-empty cluster, nearest its centre first (k-means leaves clusters empty when
    # candidates repeat, e.g. a kNN router's predictions on similar prompts)
    ranked = []
    for c in np.argsort(-np.bincount(km.labels_, minlength=n_clusters), kind="stable"):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            ranked.append(members[np.argsort(((Z[members] - km.cluster_centers_[c]) ** 2).sum(axis=1), kind="stable")])
    picks = [int(members[0]) for members in ranked[:k]]
    depth = 1
    while len(picks) < k:  # fewer non-empty clusters than k: each cluster's next-nearest member, biggest first
        picks += [int(members[depth]) for members in ranked if depth < len(members)][: k - len(picks)]
        depth += 1
    return np.array(picks, dtype=int)


@register("probed")
class ProbedQuality(QualityModel):
    """A trained quality model plus models placed from probes (``place``): their predictions are a
    function of the base model's, so the hot path adds one small product. A placed model's predicted
    quality is its posterior lower bound at ``caution`` standard deviations (:func:`cautious_logits`)."""

    def __init__(self, base: QualityModel | None = None, W: np.ndarray | None = None, b: np.ndarray | None = None,
                 S: np.ndarray | None = None, caution: float = CAUTION):
        self.base = base
        self.W = np.zeros((0, 0)) if W is None else np.asarray(W, dtype=float)  # (added, base models)
        self.b = np.zeros(0) if b is None else np.asarray(b, dtype=float)
        m = self.W.shape[1] if self.W.ndim == 2 else 0
        # (added, m + 1, m + 1) posterior covariances; zeros (no caution) for artifacts from before them
        self.S = np.zeros((len(self.b), m + 1, m + 1)) if S is None else np.asarray(S, dtype=float)
        self.caution = float(caution)

    @classmethod
    def extend(cls, model: QualityModel, w: np.ndarray, b: float, cov: np.ndarray | None = None,
               caution: float = CAUTION) -> "ProbedQuality":
        """``model`` with one more (placed) model appended; a ``ProbedQuality`` grows in place of nesting."""
        cov = np.zeros((len(w) + 1, len(w) + 1)) if cov is None else np.asarray(cov, dtype=float)
        if isinstance(model, ProbedQuality):
            return cls(model.base, np.vstack([model.W, w[None, :]]), np.append(model.b, b),
                       np.concatenate([model.S, cov[None]]), model.caution)
        return cls(model, w[None, :], np.array([b]), cov[None], caution)

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
            self.W[j], self.b[j], self.S[j] = place_posterior(L[ok], Y[ok, n_base + j])
        return self

    def predict(self, X):
        P = self.base.predict(X)
        added = sigmoid(cautious_logits(logits(P), self.W, self.b, self.S, self.caution))
        return np.hstack([P, added])

    def get_state(self):
        params, arrays = self.base.get_state()
        out = {f"base.{k}": v for k, v in arrays.items()}
        out.update({"W": self.W, "b": self.b, "S": self.S})
        return {"base_kind": self.base.kind, "base": params, "caution": self.caution}, out

    @classmethod
    def from_state(cls, params, arrays):
        base_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}
        base = QUALITY_MODELS[params["base_kind"]].from_state(params["base"], base_arrays)
        return cls(base, arrays["W"], arrays["b"], arrays.get("S"), params.get("caution", CAUTION))
