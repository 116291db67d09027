"""Export: a fitted `ScreeningModel` to one ONNX graph (training side: imports skl2onnx).

The classifier is converted by skl2onnx; the isolation forest by `_isolation_forest` (one tree
ensemble node, not skl2onnx's node-per-tree graph, which costs milliseconds per run); they are
joined into one graph, with the column selection of the anomaly detector and the combiner inside:

    X[N, F] ─┬─ logistic regression ── p ── logit ─────────────────┐
             ├─ Gather(dense columns) ── isolation forest ── -decision ─┼─ combiner ── sigmoid ── score
             └─ MatMul(rare n-gram weights) ── log(1 + x) ── novelty ───┘

Outputs: `score`, `attack_probability`, `anomaly`, each [N, 1] float32. Only the feature extraction
stays outside the graph, in `screening.features`, the same code for training and serving.
`check_parity` compares onnxruntime with scikit-learn on given inputs (the contract test uses it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

from screening import features
from screening.detectors import EPS, ScreeningModel

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
OUTPUTS = ("score", "attack_probability", "anomaly")


def _convert(estimator: object, width: int, options: dict[int, dict[str, bool]] | None = None) -> onnx.ModelProto:
    return to_onnx(
        estimator, initial_types=[("X", FloatTensorType([None, width]))], options=options,
        target_opset=TARGET_OPSET,
    )


def to_model(model: ScreeningModel) -> onnx.ModelProto:
    n = features.N_FEATURES
    classifier = onnx.compose.add_prefix(
        _convert(model.classifier_, n, {id(model.classifier_): {"zipmap": False}}), "clf_"
    )
    clf_proba = classifier.graph.output[1].name
    forest_nodes, forest_constants = _isolation_forest(model.anomaly_, "iso_X", "anomaly")
    w0 = float(model.combiner_.intercept_[0])
    w1, w2, w3 = (float(w) for w in model.combiner_.coef_[0])
    constants = [
        numpy_helper.from_array(np.asarray(model.dense_columns_, dtype=np.int64), "dense_columns"),
        numpy_helper.from_array(np.asarray([0, 1], dtype=np.int64), "slice_start"),
        numpy_helper.from_array(np.asarray([np.iinfo(np.int64).max, 2], dtype=np.int64), "slice_end"),
        numpy_helper.from_array(np.asarray(EPS, dtype=np.float32), "eps"),
        numpy_helper.from_array(np.asarray(1 - EPS, dtype=np.float32), "one_minus_eps"),
        numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.asarray(w0, dtype=np.float32), "w0"),
        numpy_helper.from_array(np.asarray(w1, dtype=np.float32), "w1"),
        numpy_helper.from_array(np.asarray(w2, dtype=np.float32), "w2"),
        numpy_helper.from_array(np.asarray(w3, dtype=np.float32), "w3"),
        numpy_helper.from_array(np.asarray(model.rare_, dtype=np.float32).reshape(-1, 1), "rare_weights"),
    ]
    nodes = [
        helper.make_node("Identity", ["X"], ["clf_X"]),
        helper.make_node("Gather", ["X", "dense_columns"], ["iso_X"], axis=1),
        *classifier.graph.node,
        helper.make_node("Slice", [clf_proba, "slice_start", "slice_end"], ["attack_probability"]),
        helper.make_node("Clip", ["attack_probability", "eps", "one_minus_eps"], ["p_clipped"]),
        helper.make_node("Sub", ["one", "p_clipped"], ["q"]),
        helper.make_node("Div", ["p_clipped", "q"], ["odds"]),
        helper.make_node("Log", ["odds"], ["logit"]),
        *forest_nodes,
        helper.make_node("Mul", ["logit", "w1"], ["z1"]),
        helper.make_node("Mul", ["anomaly", "w2"], ["z2"]),
        helper.make_node("MatMul", ["X", "rare_weights"], ["rare_count"]),
        helper.make_node("Add", ["rare_count", "one"], ["rare_count_1"]),
        helper.make_node("Log", ["rare_count_1"], ["novelty"]),
        helper.make_node("Mul", ["novelty", "w3"], ["z3"]),
        helper.make_node("Add", ["z1", "z2"], ["z12"]),
        helper.make_node("Add", ["z12", "z3"], ["z123"]),
        helper.make_node("Add", ["z123", "w0"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "portcullis_screening",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1]) for name in OUTPUTS],
        initializer=[*classifier.graph.initializer, *forest_constants, *constants],
    )
    opsets: dict[str, int] = {"ai.onnx.ml": TARGET_OPSET["ai.onnx.ml"]}
    for entry in classifier.opset_import:
        opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    combined = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())],
        producer_name="portcullis-screening",
    )
    combined.ir_version = classifier.ir_version
    onnx.checker.check_model(combined)
    return combined


def _isolation_forest(forest: object, source: str, output: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The isolation forest as ONE TreeEnsembleRegressor summing per-tree path lengths, then its score.

    skl2onnx converts an isolation forest tree by tree (a few dozen nodes each): correct, but every
    node costs a kernel launch, about 2 ms per run for 100 trees. Here each leaf carries the path
    length scikit-learn assigns it (`_decision_path_lengths + _average_path_length_per_tree - 1`),
    the ensemble sums them, and `anomaly = 2 ** (-sum / (n_trees * c(max_samples))) + offset_`,
    which is minus `decision_function`. The contract test checks it against scikit-learn.
    """
    from sklearn.ensemble._iforest import _average_path_length

    attrs: dict[str, Any] = {
        "nodes_treeids": [], "nodes_nodeids": [], "nodes_featureids": [], "nodes_values": [], "nodes_modes": [],
        "nodes_truenodeids": [], "nodes_falsenodeids": [], "target_treeids": [], "target_nodeids": [],
        "target_ids": [], "target_weights": [],
    }
    trees = forest.estimators_  # type: ignore[attr-defined]
    for t, (tree, columns) in enumerate(zip(trees, forest.estimators_features_)):  # type: ignore[attr-defined]
        structure = tree.tree_
        lengths = forest._decision_path_lengths[t] + forest._average_path_length_per_tree[t] - 1.0  # type: ignore[attr-defined]
        for node in range(structure.node_count):
            left, right = int(structure.children_left[node]), int(structure.children_right[node])
            leaf = left == -1
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            attrs["nodes_featureids"].append(0 if leaf else int(columns[structure.feature[node]]))
            attrs["nodes_values"].append(0.0 if leaf else float(structure.threshold[node]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else left)
            attrs["nodes_falsenodeids"].append(0 if leaf else right)
            if leaf:
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(lengths[node]))
    denominator = len(trees) * float(_average_path_length([forest._max_samples])[0])  # type: ignore[attr-defined]
    constants = [
        numpy_helper.from_array(np.asarray(-1.0 / denominator, dtype=np.float32), "iso_scale"),
        numpy_helper.from_array(np.asarray(2.0, dtype=np.float32), "iso_two"),
        numpy_helper.from_array(np.asarray(float(forest.offset_), dtype=np.float32), "iso_offset"),  # type: ignore[attr-defined]
    ]
    nodes = [
        helper.make_node("TreeEnsembleRegressor", [source], ["iso_depth"], domain="ai.onnx.ml", n_targets=1,
                         aggregate_function="SUM", **attrs),
        helper.make_node("Mul", ["iso_depth", "iso_scale"], ["iso_exponent"]),
        helper.make_node("Pow", ["iso_two", "iso_exponent"], ["iso_score"]),
        helper.make_node("Add", ["iso_score", "iso_offset"], [output]),
    ]
    return nodes, constants


def check_parity(model: ScreeningModel, onnx_bytes: bytes, X: np.ndarray) -> dict[str, float]:
    """Largest absolute difference per output between onnxruntime and scikit-learn on `X`."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {"X": np.asarray(X, dtype=np.float32)})
    expected = model.score_parts(X)
    return {name: float(np.max(np.abs(got[i][:, 0] - expected[name]))) for i, name in enumerate(OUTPUTS)}
