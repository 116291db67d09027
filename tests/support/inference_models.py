"""Model repositories for the inference tests: the shipped `digits` model and small generated ones.

`build_repository(root)` lays out `<root>/<name>/<version>/{model.onnx, manifest.json}`:

    digits/1    the committed demo model (models/digits/1), copied
    identity/1  one Identity per datatype (inputs `in_<TYPE>`, outputs `out_<TYPE>`, shape [-1, 3]),
                batching up to 8 rows: every datatype of the protocol that onnxruntime serves
    double/1    y = 2x over a fixed FP32 [2, 2] (no batch dimension: max_batch_size 0)

`add_version` copies a version to a new one (a hot swap's new version) or writes a broken one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from onnx import TensorProto, helper

from screening.serving.model import MANIFEST, MODEL, file_sha256

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits" / "1"
TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL, "INT8": TensorProto.INT8, "INT16": TensorProto.INT16, "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE, "BYTES": TensorProto.STRING,
}


def write_version(folder: Path, model_bytes: bytes, manifest: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL).write_bytes(model_bytes)
    manifest = {**manifest, "sha256": file_sha256(folder / MODEL)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folder


def _model(graph: Any) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def identity_model() -> bytes:
    nodes = [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t in TYPES]
    inputs = [helper.make_tensor_value_info(f"in_{t}", code, [None, 3]) for t, code in TYPES.items()]
    outputs = [helper.make_tensor_value_info(f"out_{t}", code, [None, 3]) for t, code in TYPES.items()]
    return _model(helper.make_graph(nodes, "identity", inputs, outputs))


def double_model() -> bytes:
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    graph = helper.make_graph(
        [node], "double", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], initializer=[two],
    )
    return _model(graph)


def echo_model() -> bytes:
    """One FP32 input of shape [-1, -1] returned as it is: requests of other widths cannot share a run."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
    )
    return _model(graph)


def build_repository(root: Path, digits_serving: dict[str, Any] | None = None) -> Path:
    digits = root / "digits" / "1"
    shutil.copytree(DIGITS, digits)
    if digits_serving:
        manifest = json.loads((digits / MANIFEST).read_text())
        manifest["serving"] = {**manifest["serving"], **digits_serving}
        (digits / MANIFEST).write_text(json.dumps(manifest, indent=1))
    write_version(root / "identity" / "1", identity_model(),
           {"name": "identity", "version": "1", "serving": {"max_batch_size": 8, "dynamic_batching": {}}})
    write_version(root / "double" / "1", double_model(), {"name": "double", "version": "1"})
    return root


def add_version(root: Path, name: str, source: str, version: str, broken: bool = False) -> Path:
    """Copy version `source` of `name` to `version`; `broken` truncates the model (its checksum fails)."""
    target = root / name / version
    shutil.copytree(root / name / source, target)
    if broken:
        (target / MODEL).write_bytes((target / MODEL).read_bytes()[:-64])
    return target
