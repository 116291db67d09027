"""Export: a fitted `ScreeningModel` to one ONNX graph (training side: imports skl2onnx).

Two signatures of the same fitted estimators. **wide** (`to_model`): the classifier converted by
skl2onnx reads the whole feature vector, with the column selection of the anomaly detector and the
combiner inside:

    X[N, F] ─┬─ logistic regression ── p ── logit ─────────────────┐
             ├─ Gather(dense columns) ── isolation forest ── -decision ─┼─ combiner ── sigmoid ── score
             └─ MatMul(rare n-gram weights) ── log(1 + x) ── novelty ───┘

**narrow** (`to_narrow_model`, a rewrite of the wide graph): every n-gram column is 0 or 1, so the classifier logit's and the novelty
count's n-gram parts are sums of the present n-grams' weights. Serving sums them (the tables `to_narrow_model` returns: the
classifier weight and the 0/1 rare weight of every n-gram column, kept in the manifest) over a request's
n-grams (a vector times the tables), and the graph reads `dense` [N, 116] (`features.DENSE_COLUMNS`, what
the forest reads already), `gram_logit` and `gram_rare` [N, 1]:

    dense ─┬─ MatMul(dense weights) + gram_logit + intercept ── clip ── logit ───────────┐
           └─ isolation forest ── -decision ──────────────────────────────────────────────┼─ combiner ── score
    gram_rare ── log(1 + x) ── novelty ───────────────────────────────────────────────────┘

The model is the same; the logit the combiner reads is clipped from the linear part, not taken back
from a float32 probability as the wide graph does (which loses digits for p near 0 or 1), so scores
agree with scikit-learn's float64 better than the wide graph's do, and differ from them by up to a
few 1e-5 where p is tiny; `attack_probability` is `sigmoid` of the same linear part.
The isolation forest is `_isolation_forest` in both (one tree ensemble node, not skl2onnx's
node-per-tree graph, which costs milliseconds per run). Outputs: `score`, `attack_probability`,
`anomaly`, each [N, 1] float32. Only the feature extraction stays outside the graph, in
`screening.features`, the same code for training and serving. `check_parity` compares onnxruntime
with scikit-learn on given inputs, feeding a narrow graph as serving does (the contract test uses it).
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


def to_narrow_model(wide: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[float]]]:
    """The narrow graph and its n-gram tables, made from the wide graph of the same fitted model.

    A rewrite of the wide graph, so both score with the very same parameters (a model shipped wide
    gets its narrow export without being trained again): the classifier's `LinearClassifier` over `X`
    becomes `Sigmoid(dense . w_dense + gram_logit + b)` (its class-1 coefficients on the 116 dense
    columns), the forest reads `dense` instead of `Gather(X)`, `MatMul(X, rare_weights)` becomes
    `gram_rare`; the forest and the novelty are kept node for node, the combiner's weights too. The
    tables (`logit`, `rare`: per n-gram column of `features.NGRAMS`, the class-1 coefficient and the rare
    weight, float32 values) are what serving sums over a request's n-grams."""
    graph = wide.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    by_type = {node.op_type: node for node in graph.node}
    classifier = by_type["LinearClassifier"]
    attributes = {a.name: helper.get_attribute_value(a) for a in classifier.attribute}
    n = features.N_FEATURES
    coefficients = np.asarray(attributes["coefficients"], dtype=np.float32).reshape(-1, n)
    intercepts = np.asarray(attributes["intercepts"], dtype=np.float32)
    labels = list(attributes.get("classlabels_ints", []))
    if attributes.get("post_transform") != b"LOGISTIC" or labels != [0, 1] or coefficients.shape[0] != 2:
        raise ValueError("the wide graph's classifier is not a binary logistic LinearClassifier")
    if not np.array_equal(init["dense_columns"], features.DENSE_COLUMNS):
        raise ValueError("the wide graph's dense columns are not features.DENSE_COLUMNS")
    rare = init["rare_weights"][:, 0]
    if np.any(np.delete(rare, np.arange(features.NGRAMS.start, features.NGRAMS.stop))):
        raise ValueError("rare weights outside the n-gram columns: novelty is not a sum over n-grams")
    coef = coefficients[1]
    replaced = {"Identity", "Gather", "LinearClassifier", "Slice", "MatMul"}  # the nodes that read X
    if sorted(node.op_type for node in graph.node if "X" in node.input or node.op_type == "LinearClassifier"
              or node.op_type == "Slice") != sorted(replaced):
        raise ValueError("the wide graph is not the one `to_model` makes")
    # The combiner's input is logit(clip(p)), which is clip(logit) for p = sigmoid(logit): taken straight
    # from the linear part, not back from a float32 probability, whose 1 - p or p near 0 keeps only a
    # few digits (the wide graph's logit of a p of 3e-5 is 0.2% off; this one agrees with float64).
    # Every node is a kernel launch that costs more than these few floats of work, so the linear part
    # is one Gemm and the combiner one Concat and Gemm instead of three Mul and three Add.
    head = [
        helper.make_node("Identity", ["dense"], ["iso_X"]),
        helper.make_node("Gemm", ["dense", "dense_weights", "gram_logit"], ["linear"]),
        helper.make_node("Add", ["linear", "intercept"], ["clf_logit"]),
        helper.make_node("Sigmoid", ["clf_logit"], ["attack_probability"]),
        helper.make_node("Clip", ["clf_logit", "logit_min", "logit_max"], ["logit"]),
        helper.make_node("Identity", ["gram_rare"], ["rare_count"]),
    ]
    combiner = [
        helper.make_node("Concat", ["logit", "anomaly", "novelty"], ["combined"], axis=1),
        helper.make_node("Gemm", ["combined", "combiner_weights", "combiner_bias"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    # The wide graph's logit (replaced above) and its combiner (replaced by `combiner`).
    rewritten = {"p_clipped", "q", "odds", "logit", "z1", "z2", "z3", "z12", "z123", "z", "score"}
    kept = [node for node in graph.node if node.op_type not in replaced and node.output[0] not in rewritten]
    dropped = {"dense_columns", "slice_start", "slice_end", "rare_weights", "eps", "one_minus_eps",
               "w0", "w1", "w2", "w3"}
    bound = float(np.log(EPS / (1 - EPS)))
    constants = [
        numpy_helper.from_array(coef[features.DENSE_COLUMNS].reshape(-1, 1), "dense_weights"),
        numpy_helper.from_array(np.asarray(intercepts[1], dtype=np.float32), "intercept"),
        numpy_helper.from_array(np.asarray(bound, dtype=np.float32), "logit_min"),
        numpy_helper.from_array(np.asarray(-bound, dtype=np.float32), "logit_max"),
        numpy_helper.from_array(np.stack([init["w1"], init["w2"], init["w3"]]).astype(np.float32).reshape(3, 1),
                                "combiner_weights"),
        numpy_helper.from_array(np.asarray(init["w0"], dtype=np.float32).reshape(1), "combiner_bias"),
    ]
    narrow = helper.make_graph(
        [*head, *kept, *combiner], "portcullis_screening_narrow",
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, [None, len(features.DENSE_COLUMNS)]),
         helper.make_tensor_value_info("gram_logit", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("gram_rare", TensorProto.FLOAT, [None, 1])],
        list(graph.output),
        initializer=[*(t for t in graph.initializer if t.name not in dropped), *constants],
    )
    model = helper.make_model(narrow, opset_imports=list(wide.opset_import), producer_name="portcullis-screening")
    model.ir_version = wide.ir_version
    onnx.checker.check_model(model)
    tables = {"logit": [float(w) for w in coef[features.NGRAMS]], "rare": [float(w) for w in rare[features.NGRAMS]]}
    return model, tables


def check_parity(model: ScreeningModel, onnx_bytes: bytes, X: np.ndarray,
                 tables: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Largest absolute difference per output between onnxruntime and scikit-learn on `X` ([N, F]). A
    narrow graph (given its `tables`) is fed as serving feeds it: the dense columns, and the n-gram
    tables summed in numpy over each row's present n-grams (`narrow_inputs`)."""
    got = run_graph(onnx_bytes, X, tables)
    expected = model.score_parts(X)
    return {name: float(np.max(np.abs(got[:, i] - expected[name]))) for i, name in enumerate(OUTPUTS)}


def run_graph(onnx_bytes: bytes, X: np.ndarray, tables: dict[str, list[float]] | None = None) -> np.ndarray:
    """[N, 3] outputs of a wide graph on `X`, or of a narrow one (with its `tables`) on the same rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    X = np.asarray(X, dtype=np.float32)
    if tables is None:
        feeds = {"X": X}
    else:
        feeds = narrow_inputs(X, np.asarray(tables["logit"]), np.asarray(tables["rare"]))
    return np.concatenate(session.run(list(OUTPUTS), feeds), axis=1)


def narrow_inputs(X: np.ndarray, logit: np.ndarray, rare: np.ndarray) -> dict[str, np.ndarray]:
    """The narrow graph's feeds for [N, F] vectors, as `registry.LoadedModel` makes them: the dense
    columns, and the n-gram tables summed in numpy over each row's present n-grams (0/1 columns), a
    float32 product of the tables and the row."""
    X = np.asarray(X, dtype=np.float32)
    table = np.zeros((2, features.N_FEATURES), dtype=np.float32)
    table[0, features.NGRAMS], table[1, features.NGRAMS] = logit, rare
    sums = np.zeros((len(X), 2), dtype=np.float32)
    for i, row in enumerate(X):
        np.dot(table, row, out=sums[i])
    return {"dense": X[:, features.DENSE_COLUMNS], "gram_logit": sums[:, :1], "gram_rare": sums[:, 1:]}
