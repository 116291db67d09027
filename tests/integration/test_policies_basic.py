"""Access log and CORS policies through a real gateway, and policy config errors at start-up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.policies import PolicyConfigError, build_pipeline

from .conftest import Backends, StartGateway, demo_config


async def _lines(path: Path, count: int) -> list[dict]:
    for _ in range(50):
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            if len(lines) >= count:
                return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} access lines in {path}")


async def test_access_log_one_line_per_request_without_secrets(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway
) -> None:
    log = tmp_path / "access.jsonl"
    raw = demo_config(demo_backends, policies=[
        {"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}}])
    gw = await start_gateway(raw)
    async with gw.http.get(f"{gw.url}/v1/items/7?verbose=true&api_key=SECRET",
                           headers={"Authorization": "Bearer TOKEN", "X-Request-Id": "r-1"}) as r:
        assert r.status == 400  # unknown query parameter, still logged
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "body-secret"}) as r:
        assert r.status == 200
    async with gw.http.get(f"{gw.url}/nowhere") as r:
        assert r.status == 404
    lines = await _lines(log, 3)
    assert [x["status"] for x in lines] == [400, 200, 404]
    first, second, third = lines
    assert first["request_id"] == "r-1" and first["path"] == "/v1/items/7"
    assert first["route"] == "echo.v1.EchoService.GetItem" and first["grpc_code"] == "INVALID_ARGUMENT"
    assert second["upstream"] == "echo" and second["grpc_code"] == "OK" and second["bytes_in"] > 0
    assert second["latency_ms"] >= second["upstream_ms"] > 0
    assert third["route"] is None
    text = log.read_text()
    for secret in ("SECRET", "TOKEN", "body-secret"):
        assert secret not in text


async def test_access_log_sampling_keeps_errors(tmp_path: Path, demo_backends: Backends,
                                                start_gateway: StartGateway) -> None:
    log = tmp_path / "access.jsonl"
    raw = demo_config(demo_backends, policies=[{"name": "access_log", "config": {
        "sink": "file", "path": str(log), "sample_rate": 0.0, "flush_interval_s": 0.05}}])
    gw = await start_gateway(raw)
    for _ in range(5):
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}) as r:
            assert r.status == 200
    async with gw.http.get(f"{gw.url}/nowhere") as r:
        assert r.status == 404
    lines = await _lines(log, 1)
    await asyncio.sleep(0.2)
    assert [x["status"] for x in (await _lines(log, 1))] == [404]
    assert len(lines) == 1


CORS = {"name": "cors", "config": {"allow_origins": ["https://app.example"], "max_age_s": 60}}


async def test_cors_preflight_and_actual(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends, policies=[CORS])
    raw["services"]["library.v1.LibraryService"]["policies"] = {"cors": {"enabled": False}}
    gw = await start_gateway(raw)
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type"}
    async with gw.http.options(f"{gw.url}/v1/echo", headers=pre) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Max-Age"] == "60"
    async with gw.http.options(f"{gw.url}/v1/echo", headers={**pre, "Origin": "https://evil.example"}) as r:
        assert r.status == 403
    async with gw.http.options(f"{gw.url}/v1/echo", headers={**pre, "Access-Control-Request-Headers": "x-evil"}) as r:
        assert r.status == 403
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}, headers={"Origin": "https://app.example"}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert r.headers["Access-Control-Expose-Headers"] == "x-request-id"
    async with gw.http.post(f"{gw.url}/v1/echo", json={"x": 1}, headers={"Origin": "https://app.example"}) as r:
        assert r.status == 400  # errors carry CORS headers too, so the page can read them
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    async with gw.http.options(f"{gw.url}/v1/shelves", headers={**pre, "Access-Control-Request-Method": "GET"}) as r:
        assert r.status == 405  # CORS switched off for the library service


@pytest.mark.parametrize(
    ("policies", "services_policies", "message"),
    [
        ([{"name": "nope"}], {}, "policies.0.name: unknown policy 'nope'"),
        ([CORS, CORS], {}, "listed twice"),
        ([{"name": "cors", "config": {"allow_origins": ["*"], "allow_credentials": True}}], {}, "policies.0.config"),
        ([{"name": "access_log", "config": {"sink": "file"}}], {}, "needs a path"),
        ([CORS], {"cors": {"max_age_s": -1}}, "services.echo.v1.EchoService.policies.cors.max_age_s"),
        ([], {"cors": {}}, "not in the policies list"),
    ],
)
def test_policy_config_errors_name_the_key(policies: list, services_policies: dict, message: str) -> None:
    raw = {
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
        "services": {"echo.v1.EchoService": {"backend": "echo", "policies": services_policies}},
        "policies": policies,
    }
    with pytest.raises(PolicyConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_pipeline(GatewayConfig.model_validate(raw))
