"""`TopFeatures`: the candidate columns give exactly what ranking the whole row gives (names, values,
order, ties to the lower column), whichever way a row goes; both agree with `top_contributions`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
        assert explainer.of(row, k) == whole
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
