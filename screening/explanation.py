"""Explanations of a feature row: which features push a score up, named so that a person can read them.

`top_contributions(vector, weights, k, raw_values, baseline)` ranks a row's contributions (weight
times value minus the benign baseline) and names the hashed n-grams among them by what they hash
(`describe`, which lexes the request's values again). Called for a blocked or flagged request (the
screening policy's log note and reason category) and by `portcullis screening explain`; an allowed
request's unresolved top features go through `top_features.TopFeatures` instead. `screening.features`
re-exports both names.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from screening import preprocess, tokens
from screening.feature_schema import (
    _BI0,
    _BI_SHIFT,
    _MASK64,
    _MAX0,
    _MULT,
    _ROLE3_0,
    _ROLE4_0,
    _ROLE4_SHIFT,
    _ROLE_OF,
    _TRI0,
    _TRI_SHIFT,
    NAMES,
    ROLE_NAMES,
    N,
    R,
)


def describe(raw_values: Sequence[str]) -> dict[int, str]:
    """Readable names for the n-gram positions a set of values hits (`bi:single_quote>sql_logic`,
    `role4:quote>keyword>number>operator`)."""
    names: dict[int, str] = {}

    def label(cls: int) -> str:
        return "|" if cls == 0 else tokens.NAMES[cls - 1]

    for raw in raw_values:
        sequence = [0, *tokens.classes(preprocess.normalize(raw)), 0]
        for a, b in pairwise(sequence):
            names.setdefault(_BI0 + (((a * N + b) * _MULT & _MASK64) >> _BI_SHIFT), f"bi:{label(a)}>{label(b)}")
        for a, b, c in zip(sequence, sequence[1:], sequence[2:]):
            position = _TRI0 + ((((a * N + b) * N + c) * _MULT & _MASK64) >> _TRI_SHIFT)
            names.setdefault(position, f"tri:{label(a)}>{label(b)}>{label(c)}")
        roles = [_ROLE_OF[cls] for cls in sequence]
        for a, b, c in zip(roles, roles[1:], roles[2:]):
            names.setdefault(_ROLE3_0 + (a * R + b) * R + c, NAMES[_ROLE3_0 + (a * R + b) * R + c])
        for a, b, c, d in zip(roles, roles[1:], roles[2:], roles[3:]):
            position = _ROLE4_0 + (((((a * R + b) * R + c) * R + d) * _MULT & _MASK64) >> _ROLE4_SHIFT)
            names.setdefault(position, "role4:" + ">".join(ROLE_NAMES[r] for r in (a, b, c, d)))
    return names


def top_contributions(vector: np.ndarray, weights: np.ndarray, k: int, raw_values: Sequence[str] | None = None,
                      baseline: np.ndarray | None = None) -> list[tuple[str, float]]:
    """The `k` features pushing the score up most: weight times (value minus the benign baseline),
    named readably (hashed n-grams resolved against `raw_values`) when values are given."""
    if k <= 0 or len(weights) != len(vector):
        return []
    contribution = (vector - baseline) * weights if baseline is not None and len(baseline) else vector * weights
    candidates = np.flatnonzero(contribution > 0)
    if len(candidates) == 0:
        return []
    order = candidates[np.argsort(contribution[candidates])[::-1][:k]]
    readable = describe(raw_values) if raw_values is not None and any(_BI0 <= i < _MAX0 for i in order) else {}
    return [(readable.get(int(i), NAMES[i]), round(float(contribution[i]), 3)) for i in order]
