"""onnxruntime is imported when a model is loaded, never by a gateway that loads none.

A bare `import onnxruntime` adds ~46 MiB to a process, and every worker imports the screening and
serving libraries whatever its config. Each case runs a fresh interpreter (this test process has
imported everything already) that imports what `portcullis serve` imports, starts the real gateway
(`start_serving`) from a config file in front of the demo echo backend, answers one request through
its public listener, and reports whether `onnxruntime` is in `sys.modules`: not without screening or
inference, and yes once either has loaded a model. onnxruntime's exception types, looked up when an
`except` clause is matched rather than at import, are still translated where they enter.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from screening import registry as screening_registry
from screening.serving import model as serving_model
from screening.serving.errors import InvalidInput, LoadFailed
from tests.support.inference_models import write_version
from tests.support.screening_model import NAME, build_registry

from .conftest import Backends, demo_config

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits" / "1"
SQLI = "1' OR '1'='1' --"

PROGRAM = """
import asyncio, json, sys
from pathlib import Path

import aiohttp

from gateway import __main__, supervisor  # the command and `serve`, imported before the worker starts
from gateway.config import load_config
from gateway.server import start_serving


async def main(config_path: Path, method: str, path: str, body: str) -> None:
    serving = await start_serving(load_config(config_path), config_path)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            url = f"http://127.0.0.1:{serving.public_port}{path}"
            async with http.request(method, url, json=json.loads(body) if body else None) as answer:
                status = answer.status
    finally:
        await serving.stop()
    print(json.dumps({"status": status, "onnxruntime": "onnxruntime" in sys.modules}))


asyncio.run(main(Path(sys.argv[1]), *sys.argv[2:]))
"""


async def serve_once(config: dict[str, Any], folder: Path, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """Start a gateway of `config` in a fresh interpreter, send one request; its status and whether
    onnxruntime was imported."""
    config_path = folder / "gateway.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML: read by the same `load_config` as `serve`
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, str(config_path), method, path, json.dumps(body) if body is not None else "",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return result


async def test_a_gateway_without_screening_or_inference_never_imports_onnxruntime(
    demo_backends: Backends, tmp_path: Path
) -> None:
    policies = [{"name": "metrics"}, {"name": "tracing"}, {"name": "access_log"},
                {"name": "rate_limit", "config": {"limits": [{"name": "per_ip", "key": "ip", "burst": 50,
                                                              "per_second": 50}]}}]
    result = await serve_once(demo_config(demo_backends, policies=policies), tmp_path, "POST", "/v1/echo",
                              {"message": "hello"})
    assert result == {"status": 200, "onnxruntime": False}


@pytest.mark.parametrize("what", ["screening", "inference"])
async def test_a_gateway_that_loads_a_model_imports_onnxruntime(
    demo_backends: Backends, tmp_path: Path, what: str
) -> None:
    if what == "screening":
        registry = build_registry(tmp_path / "models")
        policies = [{"name": "screening", "config": {"models_dir": str(registry), "mode": "block"}}]
        # Blocked: the model was loaded and scored the request.
        request: tuple[str, str, Any] = ("POST", "/v1/echo", {"message": SQLI})
        config, expected = demo_config(demo_backends, policies=policies), 403
    else:
        shutil.copytree(DIGITS, tmp_path / "models" / "digits" / "1")
        request = ("GET", "/v2/models/digits/ready", None)
        config, expected = demo_config(demo_backends, inference={"models_dir": str(tmp_path / "models")}), 200
    result = await serve_once(config, tmp_path, *request)
    assert result == {"status": expected, "onnxruntime": True}


def test_onnxruntime_errors_are_translated_where_they_enter(tmp_path: Path) -> None:
    digits = serving_model.load(shutil.copytree(DIGITS, tmp_path / "digits" / "1"), "digits", "1")
    # float64 where the graph takes float32 (`check` refuses it first on the request path): InvalidArgument.
    with pytest.raises(InvalidInput, match="onnxruntime refused the input"):
        digits.run({digits.inputs[0].name: np.zeros((1, 64), np.float64)})
    broken = write_version(tmp_path / "broken" / "1", b"not an onnx graph", {"name": "broken", "version": "1"})
    with pytest.raises(LoadFailed, match="onnxruntime cannot load it: InvalidProtobuf"):
        serving_model.load(broken, "broken", "1")
    wide = screening_registry.ModelRegistry(build_registry(tmp_path / "screening", signature="wide")).load(NAME)
    # Ten columns where the graph takes the feature width: onnxruntime's InvalidArgument, as `ScoringError`.
    with pytest.raises(screening_registry.ScoringError, match="InvalidArgument"):
        wide.run(np.zeros((2, 10), np.float32))
