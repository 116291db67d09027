"""Contract: the exported ONNX graphs, wide and narrow, score exactly as the scikit-learn model they came from."""

from __future__ import annotations

import numpy as np
import pytest

from screening import features
from screening.export import check_parity, run_graph, to_model, to_narrow_model
from tests.support.screening_model import _fitted


def _graphs() -> dict[str, tuple[bytes, dict[str, list[float]] | None]]:
    fitted, _ = _fitted(3)
    wide = to_model(fitted.model)
    narrow, tables = to_narrow_model(wide)
    return {"wide": (wide.SerializeToString(), None), "narrow": (narrow.SerializeToString(), tables)}


@pytest.mark.parametrize("signature", ["wide", "narrow"])
def test_onnx_matches_scikit_learn_on_every_output(signature: str) -> None:
    """The narrow graph is fed as serving feeds it: its n-gram tables summed in numpy over each row's n-grams."""
    fitted, rows = _fitted(3)
    X = features.extract_many([row.record for row in rows[:400]])
    blob, tables = _graphs()[signature]
    differences = check_parity(fitted.model, blob, X, tables)
    assert set(differences) == {"score", "attack_probability", "anomaly"}
    assert max(differences.values()) < 1e-4, differences


@pytest.mark.parametrize("signature", ["wide", "narrow"])
def test_onnx_handles_edge_inputs(signature: str) -> None:
    fitted, _ = _fitted(3)
    blob, tables = _graphs()[signature]
    edge = np.zeros((3, features.N_FEATURES), dtype=np.float32)
    edge[1] = 1.0
    edge[2, : features.N_FEATURES // 2] = 5.0
    edge[2, features._BI0 : features._MAX0] = 1.0  # n-gram columns are 0 or 1: the narrow form needs it
    assert max(check_parity(fitted.model, blob, edge, tables).values()) < 1e-4


def test_the_narrow_graph_is_the_wide_one_in_float64() -> None:
    """Narrow and wide differ by float32 rounding only; the narrow one's logit is taken from the linear
    part (not back from a float32 probability), so it sits as close to scikit-learn's float64 or closer."""
    fitted, rows = _fitted(3)
    X = features.extract_many([row.record for row in rows[:400]])
    graphs = _graphs()
    wide, narrow = (run_graph(blob, X, tables) for blob, tables in graphs.values())
    reference = fitted.model.score_parts(X)["score"]
    assert np.abs(narrow[:, 0] - reference).max() <= np.abs(wide[:, 0] - reference).max() + 1e-6
    assert np.abs(narrow[:, 2] - wide[:, 2]).max() == 0.0  # the forest reads the same 116 columns


def test_a_graph_that_is_not_the_wide_export_is_not_rewritten() -> None:
    blob, _ = _graphs()["narrow"]
    import onnx

    with pytest.raises((ValueError, KeyError)):
        to_narrow_model(onnx.load_from_string(blob))


def test_the_narrow_columns_are_the_forests_and_split_the_vector() -> None:
    from screening.detectors import dense_columns, ngram_columns

    assert features.DENSE_COLUMNS.tolist() == dense_columns().tolist()
    assert list(range(features.N_FEATURES))[features.NGRAMS] == ngram_columns().tolist()
    assert sorted([*features.DENSE_COLUMNS.tolist(), *ngram_columns().tolist()]) == list(range(features.N_FEATURES))
    # two runs around the n-grams (`registry` copies them as two slices)
    assert features.DENSE_COLUMNS.tolist() == [*range(features.NGRAMS.start),
                                               *range(features.NGRAMS.stop, features.N_FEATURES)]
