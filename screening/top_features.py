"""`TopFeatures`: the top contributing features of one feature row under one model, for the access log.

Made once per `LoadedModel` (`screening.registry`) from its explanation weights and benign baseline;
the screening policy asks for a row's top features on every request it allows (`LoadedModel.
top_features`). A feature's contribution is `(x - baseline) * weight` in float32; the answer is the
`k` largest positive ones, a tie going to the lower column, with names unresolved and values rounded
to 3 places: what `features.top_contributions(row, weights, k, None, baseline)` returns.

A row made by `features.combine` has 0 or 1 in every n-gram column, so an n-gram column's contribution
is one of two constants of the model and the larger of the two bounds it. Made once: the candidate
columns (every dense column, and the `CANDIDATE_GRAMS` n-gram columns of largest bound, in column
order) and the largest bound left out. Per row: the candidates' contributions only (a gather and a
subtract-multiply over about 250 floats instead of 4,007), then an argmax per feature. When the k-th
found is above every bound left out, no column left out can come in or tie; otherwise (or for a row
that is not float32) the whole row is ranked, as before. That is `python_of`, the definition; `of` is
the compiled `ranker.pyx` when it is built (the same list for every row, held to the definition by
property tests), which does the same in one pass over the candidates, without a numpy call.
"""

from __future__ import annotations

import numpy as np

from screening import features
from screening.features import DENSE_COLUMNS, NAMES, NGRAMS
from screening.rounding import round_places

# N-gram columns among the candidates: with the shipped model the third contribution of every one of
# 3,000 dataset rows and of the benchmark's requests is above the 129th largest bound (1.45).
CANDIDATE_GRAMS = 128
MOST = 8  # larger counts go to `features.top_contributions` (it sorts the positive contributions)
_NEG_INF = float("-inf")
# A contribution -> round(contribution, 3), remembered: contributions repeat (an n-gram's, present or
# absent, is a constant of the model).
_ROUNDED: dict[float, float] = {}


def _round3(value: float) -> float:
    rounded = _ROUNDED[value] = round_places(value, 3, 1000.0)
    if len(_ROUNDED) > 8192:
        _ROUNDED.clear()
    return rounded


class TopFeatures:
    __slots__ = ("baseline", "bound", "columns", "names", "part_baseline", "part_weights", "ranker", "weights")

    def __init__(self, weights: np.ndarray, baseline: np.ndarray, candidate_grams: int = CANDIDATE_GRAMS) -> None:
        self.weights, self.baseline = weights, baseline
        self.columns: np.ndarray | None = None  # None: every row is ranked whole
        self.bound = float("inf")
        self.names: list[str] = []
        self.part_weights = self.part_baseline = weights
        self.ranker: Ranker | None = None
        if (len(weights) != features.N_FEATURES or weights.dtype != np.float32 or baseline.dtype != np.float32
                or not (np.isfinite(weights).all() and np.isfinite(baseline).all())):
            return
        self._candidates(candidate_grams)
        if _COMPILED:
            self.ranker = Ranker(weights=weights, baseline=baseline, columns=self.columns, bound=self.bound,
                                 names=NAMES, rounded=_ROUNDED, round3=_round3)

    def _candidates(self, candidate_grams: int) -> None:
        weights, baseline = self.weights, self.baseline
        # Each n-gram column's contribution at 0 and at 1, by the very float32 operations a row goes through.
        absent = (np.zeros_like(baseline) - baseline) * weights
        present = (np.ones_like(baseline) - baseline) * weights
        bounds = np.maximum(absent, present)[NGRAMS]
        order = np.argsort(-bounds, kind="stable")
        if len(order) <= candidate_grams:
            return
        self.bound = float(bounds[order[candidate_grams]])  # the largest left out
        columns = np.sort(np.concatenate([DENSE_COLUMNS, order[:candidate_grams] + NGRAMS.start])).astype(np.intp)
        self.columns = columns
        self.names = [NAMES[i] for i in columns.tolist()]
        self.part_weights = weights[columns]
        self.part_baseline = baseline[columns]

    def of(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` largest positive contributions of `vector` (a row as `features.combine` makes it)."""
        ranker = self.ranker
        if ranker is not None:
            out = ranker.of(vector, k)  # None for a count or a row it does not take, which the definition ranks
            if out is not None:
                return out
        return self.python_of(vector, k)

    def python_of(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """`of` by numpy: the definition the compiled ranker is held to."""
        if k <= 0 or len(self.weights) != len(vector):
            return []
        if k > MOST:
            return features.top_contributions(vector, self.weights, k, None, self.baseline)
        if self.columns is not None and vector.dtype == np.float32:
            part = vector.take(self.columns)
            part -= self.part_baseline  # the very floats the whole row's ranking computes for these columns
            part *= self.part_weights
            out, last = _ranked(part, k, self.names)
            # Complete when the k-th is above every column left out, or when fewer than k are positive and
            # no column left out can be.
            if last > self.bound if len(out) == k else self.bound <= 0:
                return out
        return self.whole(vector, k)

    def whole(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """`of`, ranking every column: one subtract-multiply over the row, then an argmax per feature."""
        contribution = vector - self.baseline  # the very floats `top_contributions` ranks
        contribution *= self.weights
        return _ranked(contribution, k, NAMES)[0]


def _ranked(contribution: np.ndarray, k: int, names: list[str] | tuple[str, ...]) -> tuple[list[tuple[str, float]], float]:
    """The `k` largest positive values of `contribution` (consumed), a tie to the lower index, with
    `names[i]`; and the last value taken (-inf for none). One argmax per feature instead of sorting."""
    argmax, item = contribution.argmax, contribution.item
    out: list[tuple[str, float]] = []
    last = _NEG_INF
    while True:
        index = argmax()  # a numpy integer: `item` and the sequence take it as it is
        value = item(index)  # the float32 as a Python float, as float() of the element gives
        if not value > 0:  # NaN is argmax's maximum, and ends the ranking as it did
            break
        rounded = _ROUNDED.get(value)
        if rounded is None:
            rounded = _round3(value)
        out.append((names[index], rounded))
        last = value
        if len(out) == k:
            break
        contribution[index] = _NEG_INF
    return out, last


# The compiled ranking, when built (`make setup` builds it): the same list for every row, held to
# `python_of` by property tests (test_top_features.py, which also fails when it is not built).
try:
    from screening.ranker import Ranker
except ImportError:  # a checkout that was not built
    _COMPILED = False
else:
    _COMPILED = True
