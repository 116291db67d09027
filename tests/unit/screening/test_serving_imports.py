"""The serving path needs numpy and onnxruntime only: it must import and score with scikit-learn blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.screening_model import build_registry

PROGRAM = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sklearn", "skl2onnx", "matplotlib", "faker"):
            raise ImportError(f"{name} is training-only")
sys.meta_path.insert(0, Block())
from screening import features, inference, record, registry
import gateway.policies.screening
model = registry.ModelRegistry(sys.argv[1]).load("request-screening", "v1")
vector = features.extract(record.from_parts("GET", "/v1/items/1", [("q", "x")], {}, None))
print(float(model.run(vector[None, :])[0, 0]))
assert not any(m.split(".")[0] in ("sklearn", "skl2onnx") for m in sys.modules)
"""


def test_serving_modules_import_without_training_libraries(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "models")
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(root)], check=False, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[3], timeout=120)
    assert done.returncode == 0, done.stderr
    assert 0.0 <= float(done.stdout.strip()) <= 1.0
