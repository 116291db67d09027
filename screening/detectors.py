"""The detectors, as scikit-learn estimators (training side only: imports scikit-learn).

`ScreeningModel` holds three learned parts, each a plain estimator:
- `classifier_`: logistic regression, attack vs benign, on the whole feature vector;
- `anomaly_`: an isolation forest fitted on benign traffic only, on the dense part of the vector
  (class counts and statistics; the hashed n-grams are too sparse for it), whose score says how
  unusual a request is for this deployment;
- `rare_`: the token-sequence n-grams that benign training traffic (almost) never contains; a
  request's `novelty`, log(1 + number of such n-grams it has), is the anomaly signal of the sparse
  part, which the isolation forest cannot read: an attack of a kind never seen in training still
  writes sequences that no benign text writes;
- `combiner_`: logistic regression over (logit of the classifier's probability, anomaly score,
  novelty), fitted on out-of-fold values of all three, giving the one score in [0, 1] the gateway compares with a
  threshold. Thresholds are not part of the model: they live in the manifest and the config.

Given `groups` (the attack family of each row), the out-of-fold predictions are made by folds that
hold whole families out: the combiner then learns how far to trust the classifier on a kind of
attack it has never seen, and how much the anomaly score must make up for it, instead of learning
from a classifier that has seen every family and needs no help.

`score_parts(X)` is the reference the ONNX graph (`export.py`) must reproduce.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
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


def ngram_columns() -> np.ndarray:
    """The sparse 0/1 columns novelty counts: hashed token-class and role n-grams."""
    return np.arange(features._BI0, features._MAX0, dtype=np.int64)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


class ScreeningModel(BaseEstimator):  # type: ignore[misc]
    def __init__(self, C: float = 4.0, n_trees: int = 100, max_samples: int = 256, folds: int = 3,
                 random_state: int = 0, rare_share: float = 2e-4) -> None:
        self.C = C
        self.rare_share = rare_share
        self.n_trees = n_trees
        self.max_samples = max_samples
        self.folds = folds
        self.random_state = random_state

    def _classifier(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, class_weight="balanced", max_iter=3000, solver="lbfgs")

    def _folds(self, y: np.ndarray, groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        if groups is None:
            splitter = StratifiedKFold(self.folds, shuffle=True, random_state=self.random_state)
            return list(splitter.split(np.zeros(len(y)), y))
        rng = np.random.default_rng(self.random_state)
        attack_groups = sorted({str(g) for g in np.asarray(groups)[y == 1]})
        order = rng.permutation(len(attack_groups))
        fold_of_group = {attack_groups[i]: rank % self.folds for rank, i in enumerate(order)}
        fold = rng.integers(0, self.folds, len(y))
        attacks = np.flatnonzero(y == 1)
        fold[attacks] = [fold_of_group[str(groups[i])] for i in attacks]
        return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(self.folds)]

    def fit(self, X: np.ndarray, y: np.ndarray, progress: object = None,
            groups: np.ndarray | None = None) -> ScreeningModel:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        self.dense_columns_ = dense_columns()
        tick = getattr(progress, "update", lambda _n: None)
        # Out-of-fold classifier probabilities train the combiner on scores it has not memorised.
        # So are the anomaly and novelty scores: in-sample, every benign fitting row would look normal.
        # The vector is mostly zeros (hashed n-grams): the classifier fits on a sparse copy, same result, faster.
        Xs = sparse.csr_matrix(X)
        oof = np.zeros((len(y), 3), dtype=np.float64)
        for fit_index, held_index in self._folds(y, groups):
            fold = self._classifier().fit(Xs[fit_index], y[fit_index])
            oof[held_index, 0] = logit(fold.predict_proba(Xs[held_index])[:, 1])
            benign = X[fit_index][y[fit_index] == 0]
            oof[held_index, 1] = -self._forest(benign).decision_function(X[held_index][:, self.dense_columns_])
            oof[held_index, 2] = self._novelty(X[held_index], self._rare(benign))
            tick(1)
        self.classifier_ = self._classifier().fit(Xs, y)
        tick(1)
        self.anomaly_ = self._forest(X[y == 0])
        self.rare_ = self._rare(X[y == 0])
        tick(1)
        parts = oof
        self.combiner_ = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(parts, y)
        tick(1)
        return self

    def _forest(self, benign: np.ndarray) -> IsolationForest:
        dense = benign[:, self.dense_columns_]
        return IsolationForest(
            n_estimators=self.n_trees, max_samples=min(self.max_samples, len(dense)), random_state=self.random_state
        ).fit(dense)

    def _rare(self, benign: np.ndarray) -> np.ndarray:
        """0/1 weight per feature: 1 for an n-gram column that at most `rare_share` of benign rows have."""
        columns = ngram_columns()
        seen = (benign[:, columns] > 0).mean(axis=0) if len(benign) else np.zeros(len(columns))
        weights = np.zeros(features.N_FEATURES, dtype=np.float32)
        weights[columns[seen <= self.rare_share]] = 1.0
        return weights

    @staticmethod
    def _novelty(X: np.ndarray, rare: np.ndarray) -> np.ndarray:
        return np.log1p(np.asarray(X, dtype=np.float32) @ rare).astype(np.float64)

    def novelty(self, X: np.ndarray) -> np.ndarray:
        """log(1 + number of the request's n-grams that benign training traffic (almost) never has)."""
        return self._novelty(X, self.rare_)

    def anomaly(self, X: np.ndarray) -> np.ndarray:
        """Higher is more unusual: the negated isolation-forest decision function."""
        return -self.anomaly_.decision_function(np.asarray(X, dtype=np.float32)[:, self.dense_columns_])

    def score_parts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        p = self.classifier_.predict_proba(X)[:, 1]
        anomaly = self.anomaly(X)
        w = self.combiner_.coef_[0]
        z = self.combiner_.intercept_[0] + w[0] * logit(p) + w[1] * anomaly + w[2] * self.novelty(X)
        return {"score": 1.0 / (1.0 + np.exp(-z)), "attack_probability": p, "anomaly": anomaly}

    def score(self, X: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return self.score_parts(X)["score"]

    def feature_weights(self) -> np.ndarray:
        """Per-feature weight of the classifier (for explanations: weight times value)."""
        return np.asarray(self.classifier_.coef_[0], dtype=np.float64)
