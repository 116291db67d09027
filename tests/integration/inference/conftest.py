"""The inference tests' gateway: a model repository served over REST and gRPC, and client helpers.

`repository` lays out the shipped `digits` model and two generated ones
(`tests/support/inference_models.py`) in a temporary folder; `servers` starts a real gateway
(`start_serving`, through the integration `start_gateway` fixture) that serves it on its public
listener and on a gRPC inference listener. tritonclient's synchronous clients run in a thread
(`run`), as an application would use them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tests.support.inference_models import build_repository

from ..conftest import Backends, Gateway, StartGateway, demo_config

T = TypeVar("T")
RNG = np.random.default_rng(7)


@dataclass
class Servers:
    gw: Gateway
    http: str  # host:port of the public listener
    grpc: str  # host:port of the gRPC inference listener
    repository: Path


def inference_config(backends: Backends, repository: Path, **inference: Any) -> dict[str, Any]:
    return demo_config(backends, inference={"models_dir": str(repository), "grpc_listen": {"port": 0}, **inference})


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "models")


@pytest.fixture
async def servers(demo_backends: Backends, start_gateway: StartGateway, repository: Path) -> Servers:
    gw = await start_gateway(inference_config(demo_backends, repository))
    return Servers(gw, f"127.0.0.1:{gw.serving.public_port}", f"127.0.0.1:{gw.serving.inference_grpc_port}",
                   repository)


async def run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def digits_rows(n: int) -> np.ndarray:
    return (RNG.random((n, 64)) * 16).astype(np.float32)


def digits_input(module: Any, array: np.ndarray, datatype: str = "FP32", name: str = "input") -> Any:
    """An `InferInput` of tritonclient's `module` (http, grpc, or their aio variants)."""
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def expect(call: Callable[[], object], status: str, text: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status, caught.value
    assert text in caught.value.message(), caught.value.message()
