"""The `digits` demo model: a scikit-learn classifier of handwritten digits, exported to ONNX.

Not about screening: it shows the inference service on its own. Data: scikit-learn's bundled
`load_digits` (1,797 8x8 grey images, 64 pixels valued 0..16, ten classes; nothing is
downloaded). Pipeline: `StandardScaler` -> `PolynomialFeatures(2)` -> `LogisticRegression`,
exported whole to one ONNX graph by skl2onnx (input `input` FP32 [-1, 64]; outputs `label` INT64
[-1] and `probabilities` FP32 [-1, 10]). skl2onnx writes the pixel products one node each (some
4,300 nodes), so a run costs about a millisecond whatever the batch size: the kind of model that
dynamic batching is for. The manifest carries the serving settings (batching up to 64 rows) and
golden tensors computed by onnxruntime, which the server's smoke test replays at load.

    .venv/bin/python -m screening.serving.demo_model --out models --version 1

Needs the `train` extras (scikit-learn, skl2onnx, onnx).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from screening.serving.model import MANIFEST, MODEL, file_sha256

NAME = "digits"
SEED = 0
GOLDEN_ROWS = 3


def train_and_export(out: Path, version: str) -> Path:
    import onnxruntime as ort
    import skl2onnx
    import sklearn
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y)
    pipeline = make_pipeline(StandardScaler(), PolynomialFeatures(2), LogisticRegression(C=0.05, max_iter=300))
    pipeline.fit(X_train, y_train)
    accuracy = float(pipeline.score(X_test, y_test))
    onx = to_onnx(
        pipeline, initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}}, final_types=None,
    )
    renames = {onx.graph.output[0].name: "label", onx.graph.output[1].name: "probabilities"}
    for node in onx.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
    for output in onx.graph.output:
        output.name = renames.get(output.name, output.name)
    folder = out / NAME / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL).write_bytes(onx.SerializeToString())

    session = ort.InferenceSession(str(folder / MODEL), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"input": X_test})
    parity = float(np.max(np.abs(probabilities - pipeline.predict_proba(X_test))))
    rows = X_test[:GOLDEN_ROWS]
    golden_labels, golden_probabilities = session.run(["label", "probabilities"], {"input": rows})
    manifest: dict[str, Any] = {
        "name": NAME,
        "version": version,
        "sha256": file_sha256(folder / MODEL),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "description": "Handwritten digit classifier: 8x8 grey images as 64 pixels of 0..16, classes 0-9.",
        "classes": list(range(10)),
        "data": {"dataset": "sklearn.datasets.load_digits (bundled with scikit-learn)", "rows": len(X),
                 "test_rows": len(X_test), "seed": SEED},
        "training": {"pipeline": "StandardScaler -> PolynomialFeatures(2) -> LogisticRegression(C=0.05)",
                     "scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                     "onnx_nodes": len(onx.graph.node)},
        "metrics": {"test_accuracy": round(accuracy, 4), "onnx_accuracy": round(float(np.mean(labels == y_test)), 4),
                    "onnx_parity_max_abs": parity},
        "serving": {
            "max_batch_size": 64,
            "dynamic_batching": {"max_queue_delay_us": 500},
            "max_queue_size": 1024,
            "instances": 1,
            "golden": [{
                "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                            "data": rows.reshape(-1).tolist()}],
                "outputs": [
                    {"name": "label", "datatype": "INT64", "shape": list(golden_labels.shape),
                     "data": golden_labels.tolist()},
                    {"name": "probabilities", "datatype": "FP32", "shape": list(golden_probabilities.shape),
                     "data": [float(v) for v in golden_probabilities.reshape(-1)]},
                ],
            }],
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="Model registry root.")
    parser.add_argument("--version", default="1", help="Version folder to write.")
    args = parser.parse_args(argv)
    folder = train_and_export(args.out, args.version)
    manifest = json.loads((folder / MANIFEST).read_text())
    print(f"wrote {folder}: accuracy {manifest['metrics']['test_accuracy']}, "
          f"{manifest['training']['onnx_nodes']} ONNX nodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
