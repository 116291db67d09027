"""`Rows`: requests' features without the 4,007-float vector, in the form a narrow model reads them.

A feature vector (`features.combine`) is 116 dense columns (`DENSE_COLUMNS`: token-class maxima,
statistic maxima and minima, the request counts) and 3,891 n-gram columns (`NGRAMS`), each 0 or 1.
`Rows` keeps the dense part, [N, 116] float32 in `DENSE_COLUMNS` order, and per row the sorted
positions of the n-grams it has (the union over its fields, each once): the same vector without its
zeros, and without the scatter and the wide copies that building it costs per request.

Invariant: `Rows.of(fields, dropped).wide()` is byte for byte `features.combine(fields, dropped)`,
and `Rows.from_wide(X).wide()` is `X` for any vector whose n-gram columns are 0 or 1 (a unit test
holds both). A model with the wide signature scores `rows.wide()`; a narrow one reads `dense` and
sums its two n-gram weight tables over `grams` (`registry.LoadedModel`). Serving side: numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from screening import features

DENSE_COLUMNS = np.concatenate([np.arange(features._CLS0, features._BI0),
                                np.arange(features._MAX0, features.N_FEATURES)]).astype(np.intp)
NGRAMS = slice(features._BI0, features._MAX0)  # the n-gram columns, contiguous
N_DENSE = len(DENSE_COLUMNS)
_TOP = features._DENSE  # class counts then statistics: what is maxed over fields
_N_CLS = features._N_CLS
_MIN0 = _TOP  # where the statistic minima start in a dense row
_REQ0 = _TOP + len(features.STATS)
_NO_GRAMS = np.zeros(0, dtype=np.intp)
_maximum, _minimum, _unique = np.maximum.reduce, np.minimum.reduce, np.unique


class Rows:
    """Feature rows: `dense` [N, 116] float32 and `grams`, per row the sorted n-gram positions it has."""

    __slots__ = ("dense", "grams")

    def __init__(self, dense: np.ndarray, grams: Sequence[np.ndarray]) -> None:
        self.dense = dense
        self.grams = grams

    def __len__(self) -> int:
        return len(self.grams)

    @classmethod
    def of(cls, fields: Sequence[features.FieldVector], dropped: int = 0) -> Rows:
        """One row from a request's field contributions: what `features.combine` computes, narrow."""
        dense = np.zeros((1, N_DENSE), dtype=np.float32)
        n = len(fields)
        if not n:
            return cls(dense, (_NO_GRAMS,))
        row = dense[0]
        if n == 1:
            only = fields[0].dense
            row[:_TOP] = only
            row[_MIN0:_REQ0] = only[_N_CLS:]
            grams = _unique(fields[0].grams)
        else:
            stacked = np.frombuffer(b"".join([f.dense_bytes for f in fields]), dtype=np.float32).reshape(n, _TOP)
            _maximum(stacked, axis=0, out=row[:_TOP])
            _minimum(stacked[:, _N_CLS:], axis=0, out=row[_MIN0:_REQ0])
            grams = _unique(np.frombuffer(b"".join([f.grams_bytes for f in fields]), dtype=np.intp))
        row[_REQ0] = features._LOG1P_FIELDS[n] if n < len(features._LOG1P_FIELDS) else np.log1p(n)
        row[_REQ0 + 1] = 1.0 if dropped else 0.0
        return cls(dense, (grams,))

    @classmethod
    def from_wide(cls, X: np.ndarray) -> Rows:
        """The rows of [N, F] feature vectors (training, evaluation, golden inputs): an n-gram column
        counts as present when it is not 0 (they are 0 or 1)."""
        X = np.asarray(X, dtype=np.float32).reshape(-1, features.N_FEATURES)
        ngrams = X[:, NGRAMS]
        grams = [np.flatnonzero(line) + features._BI0 for line in ngrams]
        return cls(np.ascontiguousarray(X[:, DENSE_COLUMNS]), grams)

    @classmethod
    def stack(cls, parts: Sequence[Rows]) -> Rows:
        """Several `Rows` as one (a batch, or a request's per-field rows)."""
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.dense for p in parts]), [g for p in parts for g in p.grams])

    def __getitem__(self, row: int) -> Rows:
        """Row `row` alone (what `X[i]` gives for a batch of vectors)."""
        return Rows(self.dense[row : row + 1], (self.grams[row],))

    def take(self, start: int, stop: int) -> Rows:
        return Rows(self.dense[start:stop], self.grams[start:stop])

    def wide(self) -> np.ndarray:
        """The [N, F] feature vectors these rows stand for (exactly `features.combine`'s)."""
        X = np.zeros((len(self.grams), features.N_FEATURES), dtype=np.float32)
        X[:, DENSE_COLUMNS] = self.dense
        for i, grams in enumerate(self.grams):
            X[i, grams] = 1.0
        return X
