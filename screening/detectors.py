"""The detectors, as scikit-learn estimators (training side only: imports scikit-learn).

`ScreeningModel` holds three learned parts, each a plain estimator:
- `classifier_`: logistic regression, attack vs benign, on the whole feature vector;
- `anomaly_`: an isolation forest fitted on benign traffic only, on the dense part of the vector
  (class counts and statistics; the hashed n-grams are too sparse for it), whose score says how
  unusual a request is for this deployment;
- `combiner_`: logistic regression over (logit of the classifier's probability, anomaly score),
  fitted on out-of-fold predictions, giving the one score in [0, 1] the gateway compares with a
  threshold. Thresholds are not part of the model: they live in the manifest and the config.

`score_parts(X)` is the reference the ONNX graph (`export.py`) must reproduce.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from screening import features

EPS = 1e-6


def dense_columns() -> np.ndarray:
    """The columns the anomaly detector reads: token-class counts, statistics, request fields."""
    classes = np.arange(features._CLS0, features._BI0)
    rest = np.arange(features._MAX0, features.N_FEATURES)
    return np.concatenate([classes, rest]).astype(np.int64)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


class ScreeningModel(BaseEstimator):  # type: ignore[misc]
    def __init__(self, C: float = 4.0, n_trees: int = 100, max_samples: int = 256, folds: int = 3,
                 random_state: int = 0) -> None:
        self.C = C
        self.n_trees = n_trees
        self.max_samples = max_samples
        self.folds = folds
        self.random_state = random_state

    def _classifier(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, class_weight="balanced", max_iter=3000, solver="lbfgs")

    def fit(self, X: np.ndarray, y: np.ndarray, progress: object = None) -> ScreeningModel:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        self.dense_columns_ = dense_columns()
        tick = getattr(progress, "update", lambda _n: None)
        # Out-of-fold classifier probabilities train the combiner on scores it has not memorised.
        oof = np.zeros(len(y), dtype=np.float64)
        splitter = StratifiedKFold(self.folds, shuffle=True, random_state=self.random_state)
        for fit_index, held_index in splitter.split(X, y):
            fold = self._classifier().fit(X[fit_index], y[fit_index])
            oof[held_index] = fold.predict_proba(X[held_index])[:, 1]
            tick(1)
        self.classifier_ = self._classifier().fit(X, y)
        tick(1)
        benign = X[y == 0][:, self.dense_columns_]
        self.anomaly_ = IsolationForest(
            n_estimators=self.n_trees, max_samples=min(self.max_samples, len(benign)), random_state=self.random_state
        ).fit(benign)
        tick(1)
        parts = np.column_stack([logit(oof), self.anomaly(X)])
        self.combiner_ = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(parts, y)
        tick(1)
        return self

    def anomaly(self, X: np.ndarray) -> np.ndarray:
        """Higher is more unusual: the negated isolation-forest decision function."""
        return -self.anomaly_.decision_function(np.asarray(X, dtype=np.float32)[:, self.dense_columns_])

    def score_parts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        p = self.classifier_.predict_proba(X)[:, 1]
        anomaly = self.anomaly(X)
        z = self.combiner_.intercept_[0] + self.combiner_.coef_[0, 0] * logit(p) + self.combiner_.coef_[0, 1] * anomaly
        return {"score": 1.0 / (1.0 + np.exp(-z)), "attack_probability": p, "anomaly": anomaly}

    def score(self, X: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return self.score_parts(X)["score"]

    def feature_weights(self) -> np.ndarray:
        """Per-feature weight of the classifier (for explanations: weight times value)."""
        return np.asarray(self.classifier_.coef_[0], dtype=np.float64)
