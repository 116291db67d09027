"""Inference routes go through the policies like any route: API keys, per-model scopes, a rate limit
shared by REST and gRPC, the access log and the request metrics; health probes left open by config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from ..conftest import Backends, StartGateway
from ..test_auth import add_key
from .conftest import digits_input, digits_rows, expect, inference_config, run


async def test_keys_scopes_rate_limit_access_log_and_metrics(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway, repository: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys, log = tmp_path / "keys.yaml", tmp_path / "access.jsonl"
    alice = add_key(keys, "alice", capsys, "models.digits")
    bob = add_key(keys, "bob", capsys)
    admin = add_key(keys, "admin", capsys, "models.admin")
    raw = inference_config(
        demo_backends, repository,
        policies={"authorize": {"enabled": True}},
        server_policies={"api_key": {"enabled": False}, "authorize": {"enabled": False}},
        repository_policies={"authorize": {"required_scopes": ["models.admin"]}},
        models={"digits": {"policies": {
            "authorize": {"required_scopes": ["models.digits"]},
            "rate_limit": {"enabled": True, "limits": [
                {"name": "digits", "key": "consumer", "burst": 4, "per_second": 0.001}]},
        }}},
    )
    raw["policies"] = [
        {"name": "metrics"},
        {"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}},
        {"name": "api_key", "config": {"key_file": str(keys)}},
        {"name": "authorize", "config": {"enabled": False}},
        {"name": "rate_limit", "config": {"enabled": False}},
    ]
    gw = await start_gateway(raw)
    http_url, grpc_url = f"127.0.0.1:{gw.serving.public_port}", f"127.0.0.1:{gw.serving.inference_grpc_port}"
    x = digits_rows(1)

    def calls() -> None:
        http = thttp.InferenceServerClient(http_url)
        grpc = tgrpc.InferenceServerClient(grpc_url)
        assert http.is_server_live() and http.is_server_ready() and grpc.is_server_live()  # open probes
        expect(lambda: http.infer("digits", [digits_input(thttp, x)]), "401", "an API key is required")
        expect(lambda: http.infer("digits", [digits_input(thttp, x)], headers={"X-API-Key": bob}), "403",
               "missing scopes: models.digits")
        expect(lambda: grpc.infer("digits", [digits_input(tgrpc, x)]), "StatusCode.UNAUTHENTICATED",
               "an API key is required")
        expect(lambda: grpc.infer("digits", [digits_input(tgrpc, x)], headers={"x-api-key": bob}),
               "StatusCode.PERMISSION_DENIED", "missing scopes")
        # Any authenticated consumer may use a model without scopes of its own.
        bob_identity = np.zeros((1, 3), np.float32)
        expect(lambda: http.infer("identity", [digits_input(thttp, bob_identity, name="in_FP32")],
                                  headers={"X-API-Key": bob}), "400", "is missing")
        # alice: 4 tokens shared by REST and gRPC, then 429 / RESOURCE_EXHAUSTED
        for _ in range(2):
            http.infer("digits", [digits_input(thttp, x)], headers={"X-API-Key": alice})
            grpc.infer("digits", [digits_input(tgrpc, x)], headers={"x-api-key": alice})
        expect(lambda: http.infer("digits", [digits_input(thttp, x)], headers={"X-API-Key": alice}), "429",
               "rate limit exceeded: digits")
        expect(lambda: grpc.infer("digits", [digits_input(tgrpc, x)], headers={"x-api-key": alice}),
               "StatusCode.RESOURCE_EXHAUSTED", "rate limit exceeded")
        # A model nobody knows: its own 404, under one route for all unknown names.
        expect(lambda: http.infer("nope", [digits_input(thttp, x)], headers={"X-API-Key": bob}), "404",
               "unknown model 'nope'")
        # The repository extension wants the admin scope.
        expect(lambda: http.load_model("digits", headers={"X-API-Key": alice}), "403", "models.admin")
        http.load_model("digits", headers={"X-API-Key": admin})
        with pytest.raises(InferenceServerException, match="missing scopes"):
            grpc.unload_model("digits", headers={"x-api-key": alice})

    await run(calls)
    lines = []
    # Every call above is answered before `run` returns; its line is written by the next flush (every
    # 0.05 s, later on a loaded box): wait for the last ones (the repository calls), not for a count.
    for _ in range(200):
        if log.exists():
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            if sum(line["route"] == "inference/repository" for line in lines) >= 3:
                break
        await asyncio.sleep(0.05)
    digits = [line for line in lines if line["route"] == "inference.digits"]
    assert [(line["consumer"], line["status"]) for line in digits if line["consumer"] == "alice"] == [
        ("alice", 200), ("alice", 200), ("alice", 200), ("alice", 200), ("alice", 429), ("alice", 429)]
    assert {line["grpc_code"] for line in digits if line["status"] == 200} == {"OK"}
    served = next(line for line in digits if line["status"] == 200)
    assert served["inference"]["model"] == "digits" and served["upstream"] == "inference"
    assert any(line["route"] == "inference/server" for line in lines)
    assert any(line["route"] == "inference/unknown" and line["status"] == 404 for line in lines)
    assert any(line["route"] == "inference/repository" and line["consumer"] == "admin" for line in lines)
    async with gw.http.get(f"{gw.admin}/metrics") as r:
        text = await r.text()
    assert 'portcullis_http_requests_total{method="POST",route="inference.digits",status="429"} 2.0' in text
    assert 'portcullis_ratelimit_rejections_total{limit="digits",route="inference.digits"}' in text
