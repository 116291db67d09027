"""Models under load: hot swap with zero failed requests, a refused reload that changes nothing,
version policies, dynamic batching across concurrent requests, and a full queue (429 /
RESOURCE_EXHAUSTED). Concurrent clients are tritonclient's asyncio HTTP and gRPC clients."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tgrpc_aio
import tritonclient.http.aio as thttp_aio
from tritonclient.utils import InferenceServerException

from tests.support.inference_models import add_version, build_repository

from ..conftest import Backends, StartGateway
from .conftest import Servers, digits_rows, inference_config


def http_input(x: np.ndarray) -> Any:
    tensor = thttp_aio.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def grpc_input(x: np.ndarray) -> Any:
    tensor = tgrpc_aio.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


async def metric(servers: Servers, name: str, **labels: str) -> float:
    async with servers.gw.http.get(f"{servers.gw.admin}/metrics") as r:
        text = await r.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


async def test_hot_swap_under_load_fails_no_request(servers: Servers) -> None:
    http = thttp_aio.InferenceServerClient(servers.http)
    grpc = tgrpc_aio.InferenceServerClient(servers.grpc)
    x = digits_rows(1)
    seen: Counter[str] = Counter()
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client(kind: str) -> None:
        while not stop.is_set():
            try:
                if kind == "http":
                    result = await http.infer("digits", [http_input(x)])
                    seen[result.get_response()["model_version"]] += 1
                else:
                    result = await grpc.infer("digits", [grpc_input(x)])
                    seen[result.get_response().model_version] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                failures.append(exc)

    tasks = [asyncio.create_task(client(kind)) for kind in ("http", "grpc") * 8]
    try:
        await asyncio.sleep(0.3)
        add_version(servers.repository, "digits", "1", "2")
        await http.load_model("digits")  # v2 loads, passes its smoke test, swaps in; v1 retires
        await asyncio.sleep(0.3)
        add_version(servers.repository, "digits", "2", "3", broken=True)
        try:
            await http.load_model("digits")
            raise AssertionError("a broken version was loaded")
        except InferenceServerException as exc:
            assert exc.status() == "400" and "checksum mismatch" in exc.message()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert not failures, failures[:3]
    assert seen["1"] > 0 and seen["2"] > 0 and "3" not in seen, seen
    assert not await http.is_model_ready("digits", "1") and await http.is_model_ready("digits", "2")
    index = {(m["name"], m["version"]): m for m in await http.get_model_repository_index()}
    assert index[("digits", "2")]["state"] == "READY"
    assert index[("digits", "1")]["state"] == "UNAVAILABLE"
    assert "checksum mismatch" in index[("digits", "3")]["reason"]
    await http.close()
    await grpc.close()


async def test_version_policy_all_and_explicit_versions(demo_backends: Backends, start_gateway: StartGateway,
                                                        tmp_path: Path) -> None:
    root = build_repository(tmp_path / "models")
    add_version(root, "digits", "1", "2")
    add_version(root, "digits", "1", "10")
    gw = await start_gateway(inference_config(demo_backends, root, models={"digits": {"versions": "all"}}))
    http = thttp_aio.InferenceServerClient(f"127.0.0.1:{gw.serving.public_port}")
    meta = await http.get_model_metadata("digits")
    assert meta["versions"] == ["1", "2", "10"]  # natural order: 10 is the latest
    result = await http.infer("digits", [http_input(digits_rows(1))])
    assert result.get_response()["model_version"] == "10"
    result = await http.infer("digits", [http_input(digits_rows(1))], model_version="2")
    assert result.get_response()["model_version"] == "2"
    await http.unload_model("digits")
    assert not await http.is_model_ready("digits")
    assert await http.is_server_ready()  # an unloaded model is no longer expected
    await http.load_model("digits")
    assert await http.is_model_ready("digits", "1")
    await http.close()


async def test_dynamic_batching_runs_concurrent_requests_together(servers: Servers) -> None:
    http = thttp_aio.InferenceServerClient(servers.http)
    grpc = tgrpc_aio.InferenceServerClient(servers.grpc)
    x = digits_rows(1)
    names = ("portcullis_inference_count_total", "portcullis_inference_exec_count_total",
             "portcullis_inference_request_success_total", "portcullis_inference_batch_size_count",
             "portcullis_inference_queue_duration_seconds_count")
    # The registry is the process's: other tests counted too, so compare before and after.
    before = [await metric(servers, name, model="digits", version="1") for name in names]
    calls = [http.infer("digits", [http_input(x)]) for _ in range(48)]
    calls += [grpc.infer("digits", [grpc_input(x)]) for _ in range(48)]
    results = await asyncio.gather(*calls)
    labels = {int(r.as_numpy("label")[0]) for r in results}
    assert len(labels) == 1
    after = [await metric(servers, name, model="digits", version="1") for name in names]
    rows, runs, success, batches, queued = (a - b for a, b in zip(after, before))
    assert rows == 96 and runs < rows / 2, (rows, runs)
    assert success == 96 and batches == runs and queued == 96
    await http.close()
    await grpc.close()


async def test_full_queue_is_429_and_resource_exhausted(demo_backends: Backends, start_gateway: StartGateway,
                                                         repository: Path) -> None:
    settings = {"max_queue_size": 2, "dynamic_batching": {"enabled": False}, "instances": 1}
    gw = await start_gateway(inference_config(demo_backends, repository, models={"digits": settings}))
    http = thttp_aio.InferenceServerClient(f"127.0.0.1:{gw.serving.public_port}")
    grpc = tgrpc_aio.InferenceServerClient(f"127.0.0.1:{gw.serving.inference_grpc_port}")
    x = digits_rows(1)
    calls = [http.infer("digits", [http_input(x)]) for _ in range(40)]
    calls += [grpc.infer("digits", [grpc_input(x)]) for _ in range(40)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, InferenceServerException)]
    assert refused and len(refused) < len(outcomes)
    assert {o.status() for o in refused} <= {"429", "StatusCode.RESOURCE_EXHAUSTED"}
    assert {o.status() for o in refused} == {"429", "StatusCode.RESOURCE_EXHAUSTED"}
    assert all("requests already queued" in o.message() for o in refused)
    await http.close()
    await grpc.close()
