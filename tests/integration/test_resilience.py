"""Retries, retry budget and outlier ejection against real backends and a dead address."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import Backends, StartGateway, demo_config

DEAD = "127.0.0.1:1"  # nothing listens on port 1: every connection is refused


def two_addresses(backends: Backends, client: str = "h2", **outlier: Any) -> dict[str, Any]:
    raw = demo_config(backends)
    raw["backends"]["echo"] = {
        "addresses": [DEAD, backends.echo.address],
        "client": client,
        "health": {"enabled": False},
        "outlier": {"consecutive_failures": 3, "base_ejection_s": 30, **outlier},
    }
    return raw


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_idempotent_calls_are_retried_on_another_address(demo_backends: Backends,
                                                               start_gateway: StartGateway, client: str) -> None:
    gw = await start_gateway(two_addresses(demo_backends, client))
    statuses = []
    for i in range(20):
        async with gw.http.get(f"{gw.url}/v1/items/{i}") as r:
            statuses.append(r.status)
    assert statuses == [200] * 20
    async with gw.http.get(f"{gw.admin}/readyz") as r:
        report = (await r.json())["backends"]["echo"]
    assert report == {DEAD: False, demo_backends.echo.address: True}  # the dead address was ejected


async def test_non_idempotent_calls_are_not_retried(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(two_addresses(demo_backends, enabled=False))
    statuses = []
    for _ in range(10):
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}) as r:
            statuses.append(r.status)
    assert statuses.count(503) == 5 and statuses.count(200) == 5  # round robin, no retry for POST


async def test_route_can_declare_idempotence(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = two_addresses(demo_backends, enabled=False)
    raw["backends"]["echo"]["retry_budget"] = {"max_tokens": 100}
    raw["services"]["echo.v1.EchoService"]["methods"] = {"Echo": {"retry": {"attempts": 3, "idempotent": True}}}
    gw = await start_gateway(raw)
    for _ in range(10):
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}) as r:
            assert r.status == 200


@pytest.mark.parametrize("client", ["h2", "grpcio"])  # the lean client reports outcomes itself, grpcio wrapped
async def test_all_addresses_ejected_is_503_with_retry_after(demo_backends: Backends,
                                                              start_gateway: StartGateway, client: str) -> None:
    raw = demo_config(demo_backends)
    raw["backends"]["echo"] = {"addresses": [DEAD], "health": {"enabled": False}, "client": client,
                               "outlier": {"consecutive_failures": 2, "base_ejection_s": 5}}
    raw["services"]["echo.v1.EchoService"]["retry"] = {"attempts": 1}
    gw = await start_gateway(raw)
    for _ in range(2):
        async with gw.http.get(f"{gw.url}/v1/items/1") as r:
            assert r.status == 503 and "Retry-After" not in r.headers
    async with gw.http.get(f"{gw.url}/v1/items/1") as r:
        assert r.status == 503
        assert 1 <= int(r.headers["Retry-After"]) <= 5
        assert "ejected" in (await r.json())["message"]


async def test_retry_budget_stops_retry_storms(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends)
    raw["backends"]["echo"] = {"addresses": [DEAD], "health": {"enabled": False}, "outlier": {"enabled": False},
                               "retry_budget": {"max_tokens": 4}}
    raw["services"]["echo.v1.EchoService"]["retry"] = {"attempts": 5, "backoff_base_ms": 1, "backoff_max_ms": 2}
    gw = await start_gateway(raw)
    for _ in range(10):
        async with gw.http.get(f"{gw.url}/v1/items/1") as r:
            assert r.status == 503
    upstream = gw.serving.state.current.upstreams["echo"]
    budget = upstream.retry_budget  # type: ignore[attr-defined]
    # Without the budget 10 requests would make 50 attempts; with it the tokens drain in a few and
    # later requests get one try each.
    assert budget.tokens <= 2 and budget.denied >= 8


async def test_retries_stay_within_the_deadline(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = two_addresses(demo_backends, enabled=False)
    raw["services"]["echo.v1.EchoService"]["methods"] = {"GetItem": {"timeout_ms": 300}}
    gw = await start_gateway(raw)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gw.http.get(f"{gw.url}/v1/items/__sleep__:1000") as r:
        assert r.status == 504
    assert loop.time() - started < 1.0
