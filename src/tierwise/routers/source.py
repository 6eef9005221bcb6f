"""Quality by task: which ``source`` a prompt looks like, times how each model does on that source.

Outcome tables often say where a prompt comes from (``source``: a benchmark subject, an app feature, a
prompt set). Telling the sources apart is worth something on its own: on the shipped mmlu_pro and mmlu
tables, serving each source with its own best single models (``evaluate.per_source_zero_points``,
chosen on other folds) is above every router that does not learn the source. The source is not known at
request time, so this model learns it: a multinomial logistic regression on the prompt features gives
P(source | prompt), and the predicted quality is that mixture of the per-source success rates (each
shrunk toward the model's overall rate). Prediction is one small product and a softmax: numpy only.

Sources with fewer than ``min_rows`` rows are pooled as one; with fewer than two sources left the
model is its prior (the ensemble leaves it out then: ``usable``).
"""

from __future__ import annotations

import numpy as np

from .base import QualityModel, column_means, register

OTHER = "\x00other"  # the pooled small sources
MIN_ROWS = 10  # a source with fewer rows is pooled into OTHER
MAX_GROUPS = 64  # beyond the biggest this many sources, the rest are pooled too


def usable_groups(groups, min_rows: int = MIN_ROWS, max_groups: int = MAX_GROUPS) -> np.ndarray | None:
    """Each row's group after pooling the small ones (None: fewer than two groups remain). The one rule for
    "a table has sources to learn": the task router's, and ``evaluate``'s per-source reference."""
    if groups is None:
        return None
    g = np.asarray(groups).astype(str).astype(object)
    names, counts = np.unique(g, return_counts=True)
    keep = {names[i] for i in np.argsort(-counts, kind="stable")[:max_groups] if counts[i] >= min_rows}
    g = np.array([s if s in keep else OTHER for s in g], dtype=object)
    return g if len(set(g)) >= 2 else None


@register("source")
class SourceQuality(QualityModel):
    uses_groups = True

    def __init__(self, C: float = 1.0, prior_weight: float = 5.0, min_rows: int = MIN_ROWS, max_groups: int = MAX_GROUPS):
        self.C, self.prior_weight = float(C), float(prior_weight)
        self.min_rows, self.max_groups = int(min_rows), int(max_groups)
        self.labels: list[str] = []
        self.mu = self.sd = self.W = self.b = self.Q = None

    @classmethod
    def usable(cls, groups, **params) -> bool:
        p = cls(**params)
        return usable_groups(groups, p.min_rows, p.max_groups) is not None

    def fit(self, X, Y, groups=None):
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        prior = column_means(Y)
        g = usable_groups(groups, self.min_rows, self.max_groups)
        self.mu, self.sd = X.mean(axis=0), X.std(axis=0) + 1e-6
        if g is None:  # nothing to tell apart: the prior everywhere
            self.labels, self.W, self.b, self.Q = [OTHER], np.zeros((X.shape[1], 1)), np.zeros(1), prior[None, :]
            return self
        names, y = np.unique(g, return_inverse=True)
        self.labels = [str(s) for s in names]
        known = ~np.isnan(Y)
        self.Q = np.stack([(np.nansum(Y[y == i], axis=0) + self.prior_weight * prior)
                           / (known[y == i].sum(axis=0) + self.prior_weight) for i in range(len(names))])
        clf = LogisticRegression(C=self.C, max_iter=1000).fit((X - self.mu) / self.sd, y)
        W, b = clf.coef_.T, clf.intercept_
        if len(names) == 2:  # scikit-learn's binary form: one column for the second class
            W, b = np.hstack([np.zeros_like(W), W]), np.array([0.0, b[0]])
        self.W, self.b = W, b
        return self

    def source_proba(self, X) -> np.ndarray:
        """(n, sources) P(source | prompt), sources in ``labels`` order."""
        Z = ((np.asarray(X, dtype=np.float64) - self.mu) / self.sd) @ self.W + self.b
        Z = np.exp(Z - Z.max(axis=1, keepdims=True))
        return Z / Z.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.source_proba(X) @ self.Q

    def get_state(self):
        params = {"C": self.C, "prior_weight": self.prior_weight, "min_rows": self.min_rows,
                  "max_groups": self.max_groups, "labels": self.labels}
        return params, {"mu": self.mu, "sd": self.sd, "W": self.W, "b": self.b, "Q": self.Q}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["C"], params["prior_weight"], params["min_rows"], params["max_groups"])
        obj.labels = list(params["labels"])
        obj.mu, obj.sd, obj.W, obj.b, obj.Q = (np.asarray(arrays[k], dtype=np.float64) for k in ("mu", "sd", "W", "b", "Q"))
        return obj
