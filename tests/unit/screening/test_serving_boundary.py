"""The serving library is a library: it imports neither the gateway nor aiohttp, nor training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from screening.serving import batcher, codec, datatypes, errors, grpc_codec, model, repository, settings
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("gateway", "aiohttp", "sklearn", "skl2onnx", "grpc"))
assert not bad, bad
print("ok")
"""


def test_serving_imports_no_gateway_aiohttp_grpc_or_training() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], check=False, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[3], timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
