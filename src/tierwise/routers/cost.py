"""Per-request cost: what answering *this* prompt with each model is expected to cost.

A request costs ``tokens_in x input price + tokens_out x output price``. The input side is known
exactly when the request arrives; the output side differs a lot between models (a verbose model
costs several times more on the same prompt). Per model, :class:`CostModel` learns

    cost(prompt, m) = a_m * tokens_in(prompt) + b_m * out_m(prompt) + c_m

from an outcome table:

* ``tokens_in`` is the router's count of the prompt, ``estimate_tokens`` (characters / 4): the count
  ``load_table`` prices price-book tables with, cheap at request time and independent of any one
  model's tokenizer (``a_m`` absorbs a model's own tokenizer ratio when the table has real counts);
* with answer lengths in the table (``tokens_out|m``, or ``outchars|m`` / 4), ``out_m`` is a ridge
  regression of the answer length on the prompt features and ``a, b, c`` are non-negative least squares
  on the table's cost (its prices recovered);
* with only a per-prompt ``cost|m``, ``a, c`` are fitted on ``tokens_in`` and ``out_m`` learns what is
  left of the cost (``b = 1``);
* with no per-prompt signal (one price per model), each model's mean cost (``mode == "mean"``).

The hot path is one (1, d) x (d, m) product; no scikit-learn at request time.
"""

from __future__ import annotations

import numpy as np

MODES = ("mean", "request")
_ALPHAS = tuple(np.logspace(-1, 4, 6))


class CostModel:
    """Expected cost per (prompt, model). ``fit`` on a table's rows; ``predict(X, tokens_in)``."""

    def __init__(self, mode: str = "request"):
        if mode not in MODES:
            raise ValueError(f"unknown cost mode {mode!r}; choose one of {MODES}")
        self.mode = mode
        self.signal: list[str] = []  # per model: "tokens_out", "cost", "mean"
        self.a = self.b = self.c = np.zeros(0)
        self.W: np.ndarray | None = None  # (d, m) output-size regression on standardised features
        self.w0 = np.zeros(0)
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.floor = np.zeros(0)
        self.mean = np.zeros(0)
        self._scaled: np.ndarray | None = None  # W / sd, built at the first prediction

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray, tokens_in: np.ndarray, cost: np.ndarray, tokens_out: np.ndarray | None = None) -> "CostModel":
        """``X`` (n, d) features, ``tokens_in`` (n,), ``cost`` (n, m) realised, ``tokens_out`` (n, m) or None."""
        X = np.asarray(X, dtype=np.float32)
        tin = np.asarray(tokens_in, dtype=float)
        cost = np.asarray(cost, dtype=float)
        n, m = cost.shape
        self.mean = cost.mean(axis=0)
        self.floor = 0.05 * self.mean
        self.a, self.b, self.c = np.zeros(m), np.zeros(m), self.mean.copy()
        self.w0 = np.zeros(m)
        self.W = np.zeros((X.shape[1], m), dtype=np.float32)
        self._scaled = None
        self.signal = ["mean"] * m
        if self.mode == "mean":
            return self
        self.mu = X.mean(axis=0)
        self.sd = X.std(axis=0) + 1e-6
        Xs = (X - self.mu) / self.sd
        for j in range(m):
            out = None if tokens_out is None else tokens_out[:, j]
            if out is not None and np.isfinite(out).sum() >= 20:
                self._fit_tokens_out(j, Xs, tin, cost[:, j], out)
            elif cost[:, j].std() > 1e-9 * max(abs(self.mean[j]), 1e-300):
                self._fit_cost(j, Xs, tin, cost[:, j])
        if all(s == "mean" for s in self.signal):
            self.mode = "mean"
        return self

    def _fit_tokens_out(self, j, Xs, tin, cost, out) -> None:
        from scipy.optimize import nnls

        ok = np.isfinite(out)
        A = np.column_stack([tin[ok], out[ok], np.ones(ok.sum())])
        scale = A.max(axis=0) + 1e-12
        coef, _ = nnls(A / scale, cost[ok])
        self.a[j], self.b[j], self.c[j] = coef / scale
        self.W[:, j], self.w0[j] = _ridge(Xs[ok], out[ok])
        self.signal[j] = "tokens_out"

    def _fit_cost(self, j, Xs, tin, cost) -> None:
        from scipy.optimize import nnls

        A = np.column_stack([tin, np.ones(len(tin))])
        scale = A.max(axis=0) + 1e-12
        coef, _ = nnls(A / scale, cost)
        self.a[j], self.c[j] = coef / scale
        rest = cost - (self.a[j] * tin + self.c[j])
        if rest.std() > 1e-3 * max(cost.std(), 1e-300):  # more than the input side explains
            self.b[j] = 1.0
            self.W[:, j], self.w0[j] = _ridge(Xs, rest)
        self.signal[j] = "cost"

    # ------------------------------------------------------------------ inference
    def predict(self, X: np.ndarray, tokens_in: np.ndarray) -> np.ndarray:
        """(n, m) expected cost; ``tokens_in`` (n,)."""
        X = np.atleast_2d(X)
        if self.mode == "mean":
            return np.broadcast_to(self.mean, (len(X), len(self.mean)))
        W = self._scaled
        if W is None:  # the standardisation's scale folded into the weights, once
            W = self._scaled = (self.W / self.sd[:, None]).astype(np.float32)
        out = (X - self.mu) @ W + self.w0
        cost = np.asarray(tokens_in, dtype=float).reshape(-1, 1) * self.a + self.b * np.maximum(out, 0.0) + self.c
        return np.maximum(cost, self.floor, out=cost)

    def add_model(self, a: float, c: float, mean: float) -> None:
        """Append a model priced ``a * tokens_in + c`` (``c`` holding its mean output cost: no answer-length model)."""
        self.a, self.b, self.c = np.append(self.a, a), np.append(self.b, 0.0), np.append(self.c, c)
        self.mean, self.floor = np.append(self.mean, mean), np.append(self.floor, 0.05 * mean)
        self.w0 = np.append(self.w0, 0.0)
        if self.W is not None:
            self.W = np.column_stack([self.W, np.zeros(len(self.W), dtype=np.float32)])
            self._scaled = None
        self.signal.append("probe")

    def describe(self) -> dict:
        return {"mode": self.mode, "signal": list(self.signal)}

    # ------------------------------------------------------------------ artifacts
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {"a": self.a, "b": self.b, "c": self.c, "w0": self.w0, "floor": self.floor, "mean": self.mean}
        if self.mode != "mean":
            arrays.update({"W": self.W, "mu": self.mu, "sd": self.sd})
        return {"mode": self.mode, "signal": self.signal}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "CostModel":
        obj = cls(params["mode"])
        obj.signal = [str(s) for s in params.get("signal", [])]
        for k in ("a", "b", "c", "w0", "floor", "mean"):
            setattr(obj, k, np.asarray(arrays[k], dtype=float))
        if obj.mode != "mean":
            obj.W, obj.mu, obj.sd = (np.asarray(arrays[k], dtype=np.float32) for k in ("W", "mu", "sd"))
        return obj

    @classmethod
    def constant(cls, mean_cost: np.ndarray) -> "CostModel":
        """The per-model mean: artifacts of version 1, and tables with no per-prompt cost."""
        obj = cls("mean")
        obj.mean = np.asarray(mean_cost, dtype=float)
        m = len(obj.mean)
        obj.a, obj.b, obj.c, obj.w0, obj.floor = np.zeros(m), np.zeros(m), obj.mean.copy(), np.zeros(m), 0.05 * obj.mean
        obj.signal = ["mean"] * m
        return obj


def _ridge(Xs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge regression with the penalty picked by efficient leave-one-out (scikit-learn, training only);
    the plain mean when no penalty predicts better than it out of sample."""
    from sklearn.linear_model import RidgeCV

    r = RidgeCV(alphas=_ALPHAS, scoring="neg_mean_squared_error").fit(Xs, y)
    n = len(y)
    if -r.best_score_ >= y.var() * (n / max(n - 1, 1)) ** 2:  # the mean's leave-one-out error
        return np.zeros(Xs.shape[1], dtype=np.float32), float(y.mean())
    return r.coef_.astype(np.float32), float(r.intercept_)


def cross_val_cost(X: np.ndarray, tokens_in: np.ndarray, cost: np.ndarray, tokens_out: np.ndarray | None,
                   folds: np.ndarray, mode: str = "request") -> np.ndarray:
    """Out-of-fold expected cost (n, m): what the router would have decided with on each row."""
    out = np.empty(cost.shape, dtype=float)
    for f in np.unique(folds):
        test = folds == f
        model = CostModel(mode).fit(X[~test], tokens_in[~test], cost[~test],
                                    None if tokens_out is None else tokens_out[~test])
        out[test] = model.predict(X[test], tokens_in[test])
    return out


def table_cost_inputs(table) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(tokens_in, cost, tokens_out)`` of an outcome table, as :meth:`CostModel.fit` takes them."""
    return table.prompt_tokens(), table.cost, table.output_tokens()
