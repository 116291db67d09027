"""`TopFeatures`: the candidate columns give exactly what ranking the whole row gives (names, values,
order, ties to the lower column), whichever way a row goes; both agree with `top_contributions`. The
compiled ranking (`screening/ranker.pyx`) gives the definition's (`python_of`) list for every row.

It must be built: a checkout where `make setup` did not compile it fails here rather than passing on
the Python path (the same list, several times the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from screening import features
from screening.registry import LoadedModel, ModelRegistry, load_folder
from screening.top_features import TopFeatures
from tests.support.screening_model import NAME, build_registry

ATTACKS = ("1' UNION SELECT username, password FROM users--", "<script>alert(1)</script>", "../../etc/passwd",
           "${jndi:ldap://x/a}", "; cat /etc/shadow", "{{7*7}}", "admin)(|(uid=*))", "%0d%0aSet-Cookie: a=b")
values_strategy = st.lists(
    st.one_of(st.text(max_size=60), st.sampled_from(ATTACKS),
              st.sampled_from(("/v1/echo", "curl/7.88.1", "application/json", "en-GB", "1", ""))),
    max_size=8,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[LoadedModel]:
    tiny = load_folder(build_registry(tmp_path_factory.mktemp("models"), ("v1",)) / NAME / "v1")
    return [ModelRegistry(Path("models")).load(NAME), tiny]


def _row(values: list[str]) -> np.ndarray:
    return features.combine(features.field_vectors(values), 0)


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, k=st.integers(1, 8), candidates=st.sampled_from([0, 3, 40, 128, 1000]))
@example(values=[], k=3, candidates=128)  # nothing present: only absences push the score up
@example(values=["Hi team, could you send the Q3 report by Friday?", "curl/7.88.1"], k=3, candidates=128)
def test_the_candidates_rank_as_the_whole_row(models: list[LoadedModel], values: list[str], k: int,
                                               candidates: int) -> None:
    row = _row(values)
    for model in models:
        explainer = TopFeatures(model.weights, model.baseline, candidates)
        whole = explainer.whole(row, k)
        assert explainer.of(row, k) == explainer.python_of(row, k) == whole
        dense = features.top_contributions(row, model.weights, k, None, model.baseline)
        assert [v for _, v in whole] == [v for _, v in dense]
        for value in {v for _, v in dense[:-1]} - {dense[-1][1]} if dense else ():
            # top_contributions sorts: equal values may come in any order, and the last one cuts a tie anywhere
            assert {n for n, v in whole if v == value} == {n for n, v in dense if v == value}


def test_the_bound_covers_every_column_left_out(models: list[LoadedModel]) -> None:
    for model in models:
        explainer = model.explainer
        assert explainer.columns is not None
        left_out = np.setdiff1d(np.arange(features.N_FEATURES)[features.NGRAMS], explainer.columns)
        for x in (0.0, 1.0):
            contribution = (np.full(len(left_out), x, dtype=np.float32) - model.baseline[left_out]) * model.weights[left_out]
            assert contribution.max() <= explainer.bound
        assert set(features.DENSE_COLUMNS.tolist()) <= set(explainer.columns.tolist())


def test_odd_rows_are_ranked_whole(models: list[LoadedModel]) -> None:
    model = models[0]
    row = _row(["1' UNION SELECT username, password FROM users--"])
    assert model.top_features(row.astype(np.float64), 3) == model.explainer.whole(row.astype(np.float64), 3)
    broken = row.copy()
    broken[features.DENSE_COLUMNS[-1]] = np.nan  # argmax takes NaN first, and the ranking ends there
    assert model.top_features(broken, 3) == model.explainer.whole(broken, 3) == []
    assert model.top_features(row, 0) == [] and model.top_features(row[:10], 3) == []
    assert model.top_features(row, 12) == features.top_contributions(row, model.weights, 12, None, model.baseline)


def test_the_ranker_is_built_and_serves_the_ranking(models: list[LoadedModel]) -> None:
    from screening import ranker

    for model in models:
        assert isinstance(model.explainer.ranker, ranker.Ranker)


# Rows of every kind the ranker reads: counts and statistics, 0/1 n-grams, ties (few distinct values),
# and the odd ones (NaN, infinities, negatives, -0.0) a row from elsewhere could hold.
_CELL = st.one_of(st.sampled_from([0.0, 1.0, -0.0, 0.5, 2.0]),
                  st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(st.tuples(st.integers(0, features.N_FEATURES - 1), _CELL), max_size=40),
       base=st.sampled_from([0.0, 1.0]), k=st.integers(1, 8), candidates=st.sampled_from([0, 3, 40, 128, 1000]),
       narrow=st.booleans())
@example(cells=[(0, float("nan"))], base=0.0, k=3, candidates=128, narrow=False)
@example(cells=[(5, float("inf"))], base=1.0, k=3, candidates=128, narrow=False)
def test_the_ranker_ranks_as_the_definition(models: list[LoadedModel], cells: list[tuple[int, float]], base: float,
                                            k: int, candidates: int, narrow: bool) -> None:
    row = np.full(features.N_FEATURES, base, dtype=np.float32)
    if narrow:  # n-grams 0 or 1 as `combine` makes them, the odd cells in the dense columns only
        row[features.NGRAMS] = 0.0
        cells = [(int(features.DENSE_COLUMNS[i % len(features.DENSE_COLUMNS)]), v) for i, v in cells]
    for i, value in cells:
        row[i] = value
    for model in models:
        explainer = TopFeatures(model.weights, model.baseline, candidates)
        assert explainer.ranker is not None
        with np.errstate(over="ignore", invalid="ignore"):  # huge cells overflow float32, as they may
            assert explainer.of(row, k) == explainer.python_of(row, k)


@settings(max_examples=100, deadline=None)
@given(row=hnp.arrays(np.float32, features.N_FEATURES, elements=st.sampled_from([0.0, 0.25, 1.0, 3.0])),
       weights=hnp.arrays(np.float32, features.N_FEATURES, elements=st.sampled_from([-1.0, 0.0, 0.5, 1.0])),
       baseline=hnp.arrays(np.float32, features.N_FEATURES, elements=st.sampled_from([0.0, 0.25])),
       k=st.integers(1, 8), candidates=st.sampled_from([3, 128]))
def test_ties_go_to_the_lower_column_in_both(row: np.ndarray, weights: np.ndarray, baseline: np.ndarray, k: int,
                                             candidates: int) -> None:
    """A model of few distinct weights: most contributions tie, and the bound is often reached."""
    explainer = TopFeatures(weights, baseline, candidates)
    assert explainer.of(row, k) == explainer.python_of(row, k)
    if np.isin(row[features.NGRAMS], (0.0, 1.0)).all():  # a row as `combine` makes it: the bound holds
        assert explainer.of(row, k) == explainer.whole(row, k)


def test_rows_the_ranker_does_not_read_go_to_the_definition(models: list[LoadedModel]) -> None:
    model = models[0]
    row = _row(["1' UNION SELECT username, password FROM users--", "curl/7.88.1"])
    ranker = model.explainer.ranker
    assert ranker is not None
    assert ranker.of(row, 3) == model.explainer.python_of(row, 3) != []
    wide = np.repeat(row, 2)[::2]  # the same values, not in one block
    swapped = row.astype(">f4")  # float32 of the other byte order: not the ranker's format
    for odd in (row.astype(np.float64), wide, swapped, row[None, :], row[:-1]):
        assert ranker.of(odd, 3) is None
    assert ranker.of(row, 0) is None and ranker.of(row, 9) is None
    for odd in (row.astype(np.float64), wide, swapped):
        assert model.top_features(odd, 3) == model.explainer.python_of(odd, 3)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(st.tuples(st.integers(0, 30), st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.25])), max_size=6),
                     min_size=2, max_size=12),
       k=st.integers(1, 8))
def test_one_ranker_over_many_rows_names_each_as_the_definition(models: list[LoadedModel],
                                                                rows: list[list[tuple[int, float]]], k: int) -> None:
    """The ranker remembers the pair it made per column: the same columns coming back with other values
    (and the same ones again) must still give the definition's values."""
    for model in models:
        explainer = model.explainer
        for cells in rows:
            row = np.zeros(features.N_FEATURES, dtype=np.float32)
            for i, value in cells:
                row[int(features.DENSE_COLUMNS[i])] = value
            assert explainer.of(row, k) == explainer.python_of(row, k)
