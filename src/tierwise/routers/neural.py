"""Learned routers trained with a small numpy AdamW loop (no torch at train or serve time).

``mf``: a two-tower matrix factorisation in the spirit of RouteLLM's MF router and EmbedLLM.
A shared prompt tower (one ReLU layer over the prompt features) maps a prompt to a vector ``h``;
each model has an embedding ``v_m``; P(model m answers well) = sigmoid(<h, v_m> + b_m). The tower
is shared by every model, so a model with few labels borrows strength from the others.

``linear``: the same loss with no shared tower: one logistic regression per model.

Both use masked soft binary cross-entropy, so missing cells (NaN) are skipped and graded scores
in [0, 1] (partial credit, judge scores) are first-class targets. A small seed ensemble with
early stopping on a held-out slice keeps predictions calibrated and stable across folds.
"""

from __future__ import annotations

import numpy as np

from .base import QualityModel, column_means, register


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class _Net:
    """One member of the ensemble: parameters plus the forward pass."""

    def __init__(self, d: int, m: int, hidden: int, prior: np.ndarray, rng: np.random.Generator):
        self.hidden = hidden
        width = hidden if hidden > 0 else d
        self.p: dict[str, np.ndarray] = {
            "V": (rng.standard_normal((m, width)) * (0.1 / np.sqrt(width))).astype(np.float32),
            "c": np.log(np.clip(prior, 1e-3, 1 - 1e-3) / np.clip(1 - prior, 1e-3, 1)).astype(np.float32),
        }
        if hidden > 0:
            self.p["W1"] = (rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32)
            self.p["b1"] = np.zeros(hidden, dtype=np.float32)

    def forward(self, X: np.ndarray, drop: np.ndarray | None = None):
        if self.hidden > 0:
            z1 = X @ self.p["W1"] + self.p["b1"]
            a = np.maximum(z1, 0.0)
            if drop is not None:
                a = a * drop
        else:
            z1, a = None, X
        return z1, a, a @ self.p["V"].T + self.p["c"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.forward(X)[2])


class NeuralQuality(QualityModel):
    """Shared training loop; subclasses fix the architecture."""

    hidden = 0

    def __init__(
        self,
        epochs: int = 80,
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        batch: int = 256,
        dropout: float = 0.2,
        seeds: int = 3,
        patience: int = 8,
        val_frac: float = 0.1,
        hidden: int | None = None,
    ):
        if hidden is not None:
            self.hidden = int(hidden)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch, self.dropout, self.seeds = int(batch), float(dropout), int(seeds)
        self.patience, self.val_frac = int(patience), float(val_frac)
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.nets: list[_Net] = []
        self._fused: tuple | None = None

    # ---------------------------------------------------------------- training
    def fit(self, X, Y):
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        self.mu = X.mean(axis=0)
        self.sd = X.std(axis=0) + 1e-6
        Xs = (X - self.mu) / self.sd
        prior = column_means(Y)
        self.nets = [self._train_one(Xs, Y, prior, seed) for seed in range(self.seeds)]
        self._fused = None
        return self

    def _train_one(self, X, Y, prior, seed: int) -> _Net:
        rng = np.random.default_rng(1000 + seed)
        n, d = X.shape
        m = Y.shape[1]
        mask = (~np.isnan(Y)).astype(np.float32)
        Y0 = np.nan_to_num(Y)
        order = rng.permutation(n)
        n_val = int(n * self.val_frac) if n >= 50 else 0
        val, train = order[:n_val], order[n_val:]
        net = _Net(d, m, self.hidden, prior, rng)
        state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in net.p.items()}
        best = (np.inf, {k: v.copy() for k, v in net.p.items()})
        bad, step = 0, 0
        b1, b2, eps = 0.9, 0.999, 1e-8
        for _epoch in range(self.epochs):
            rng.shuffle(train)
            for start in range(0, len(train), self.batch):
                idx = train[start : start + self.batch]
                xb, yb, mb = X[idx], Y0[idx], mask[idx]
                drop = None
                if self.hidden > 0 and self.dropout > 0:
                    drop = (rng.random((len(idx), self.hidden)) >= self.dropout).astype(np.float32) / (1 - self.dropout)
                z1, a, logits = net.forward(xb, drop)
                denom = max(float(mb.sum()), 1.0)
                g = mb * (_sigmoid(logits) - yb) / denom
                grads = {"V": g.T @ a, "c": g.sum(axis=0)}
                if self.hidden > 0:
                    da = g @ net.p["V"]
                    if drop is not None:
                        da = da * drop
                    dz = da * (z1 > 0)
                    grads["W1"] = xb.T @ dz
                    grads["b1"] = dz.sum(axis=0)
                step += 1
                for k, grad in grads.items():
                    m1, m2 = state[k]
                    m1 *= b1
                    m1 += (1 - b1) * grad
                    m2 *= b2
                    m2 += (1 - b2) * grad * grad
                    update = (m1 / (1 - b1**step)) / (np.sqrt(m2 / (1 - b2**step)) + eps)
                    if k in ("W1", "V"):  # decoupled weight decay (AdamW)
                        update = update + self.weight_decay * net.p[k]
                    net.p[k] -= (self.lr * update).astype(np.float32)
            if n_val == 0:
                continue
            loss = _masked_bce(net.predict(X[val]), Y0[val], mask[val])
            if loss < best[0] - 1e-5:
                best, bad = (loss, {k: v.copy() for k, v in net.p.items()}), 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if n_val:
            net.p = best[1]
        return net

    # ---------------------------------------------------------------- inference
    def predict(self, X):
        W, b, V, c = self._fused or self._fuse()
        Z = (np.asarray(X, dtype=np.float32) - self.mu) @ W
        Z += b
        if V is not None:  # the seeds' hidden layers side by side, then their heads as one block-diagonal product
            Z = np.maximum(Z, 0.0, out=Z) @ V
            Z += c
        Z *= 0.5  # sigmoid(z) = (1 + tanh(z / 2)) / 2, in place; the seeds' mean
        np.tanh(Z, out=Z)
        Z += 1.0
        return Z.reshape(len(Z), len(self.nets), -1).sum(axis=1) * (0.5 / len(self.nets))

    def _fuse(self):
        """The seed ensemble as one product: the scaling of standardisation folded into the first layer's
        weights (the centring stays a subtraction: a constant column stays exactly zero) and every seed's
        layer side by side (inference only; training runs each ``_Net`` on its own)."""
        scale = (1.0 / self.sd).astype(np.float32)[:, None]
        layers = [(net.p["W1"], net.p["b1"]) if self.hidden > 0 else (net.p["V"].T, net.p["c"]) for net in self.nets]
        W = np.hstack([w * scale for w, _ in layers]).astype(np.float32)
        b = np.concatenate([bias for _, bias in layers]).astype(np.float32)
        V = c = None
        if self.hidden > 0:
            from scipy.linalg import block_diag

            V = block_diag(*[net.p["V"].T for net in self.nets]).astype(np.float32)
            c = np.concatenate([net.p["c"] for net in self.nets]).astype(np.float32)
        self._fused = (W, b, V, c)
        return self._fused

    def get_state(self):
        params = {
            "hidden": self.hidden,
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch": self.batch,
            "dropout": self.dropout,
            "seeds": len(self.nets),
            "patience": self.patience,
            "val_frac": self.val_frac,
        }
        arrays = {"mu": self.mu, "sd": self.sd}
        for i, net in enumerate(self.nets):
            for k, v in net.p.items():
                arrays[f"net{i}.{k}"] = v
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(**params)
        obj.mu, obj.sd = arrays["mu"], arrays["sd"]
        obj.nets = []
        for i in range(params["seeds"]):
            net = _Net.__new__(_Net)
            net.hidden = obj.hidden
            net.p = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"net{i}.")}
            obj.nets.append(net)
        return obj


def _masked_bce(p: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float((ll * mask).sum() / max(mask.sum(), 1.0))


@register("mf")
class MFQuality(NeuralQuality):
    hidden = 128


@register("linear")
class LinearQuality(NeuralQuality):
    hidden = 0
