"""Contract: the exported ONNX graph scores exactly as the scikit-learn model it came from."""

from __future__ import annotations

import numpy as np

from screening import features
from screening.export import check_parity, to_model
from tests.support.screening_model import _fitted


def test_onnx_matches_scikit_learn_on_every_output() -> None:
    fitted, rows = _fitted(3)
    X = features.extract_many([row.record for row in rows[:400]])
    blob = to_model(fitted.model).SerializeToString()
    differences = check_parity(fitted.model, blob, X)
    assert set(differences) == {"score", "attack_probability", "anomaly"}
    assert max(differences.values()) < 1e-4, differences


def test_onnx_handles_edge_inputs() -> None:
    fitted, _ = _fitted(3)
    blob = to_model(fitted.model).SerializeToString()
    edge = np.zeros((3, features.N_FEATURES), dtype=np.float32)
    edge[1] = 1.0
    edge[2, : features.N_FEATURES // 2] = 5.0
    assert max(check_parity(fitted.model, blob, edge).values()) < 1e-4
