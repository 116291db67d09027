"""Rate limiting through real gateways, against a real Redis on 127.0.0.1:6379 (started if down).

Each test uses its own key prefix and deletes its keys. A dead Redis is a closed port and a hung
one is a local socket that accepts and never answers, so the shared server is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import policies
from gateway.call import Call
from gateway.pipeline import Pipeline
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs
from gateway.policies.rate_limit.bucket import Bucket, LimiterUnavailable
from gateway.policies.rate_limit.local import LocalBackend
from gateway.policies.rate_limit.redis import CLIENT_NAME, RedisBackend
from tests.support import redis_server as redis_server_support

from .conftest import Backends, Gateway, StartGateway, demo_config

REDIS_URL = redis_server_support.URL
ECHO = "echo.v1.EchoService"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with redis_server_support.running() as url:
        yield url


@pytest.fixture
async def prefix(redis_server: str) -> AsyncIterator[str]:
    key_prefix = f"portcullis:test:{uuid.uuid4().hex}:"
    yield key_prefix
    client = aioredis.Redis.from_url(redis_server)
    try:
        keys = [k async for k in client.scan_iter(match=key_prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def hung_redis() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers: a Redis stuck in a long command or a dead VM."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def limited(backends: Backends, config: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    return demo_config(backends, policies=[*extra, {"name": "rate_limit", "config": config}])


async def echo(gw: Gateway, **headers: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}, headers=headers) as r:
        return r.status, dict(r.headers), await r.json()


LIMIT = {"name": "per_ip", "key": "ip", "burst": 3, "per_second": 0.01}


async def test_local_headers_and_429(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(limited(demo_backends, {"limits": [LIMIT]}))
    seen = []
    for _ in range(3):
        status, headers, _ = await echo(gw)
        seen.append((status, headers["RateLimit-Limit"], headers["RateLimit-Remaining"]))
    assert seen == [(200, "3", "2"), (200, "3", "1"), (200, "3", "0")]
    status, headers, body = await echo(gw)
    assert status == 429
    assert headers["Retry-After"] == "100"  # one token at 0.01/s
    assert headers["RateLimit-Remaining"] == "0" and headers["RateLimit-Reset"] == "300"
    assert body["code"] == 8 and body["message"] == "rate limit exceeded: per_ip"
    assert {d["@type"].rsplit(".", 1)[1] for d in body["details"]} == {"QuotaFailure", "RetryInfo"}
    async with gw.http.get(f"{gw.url}/v1/items/1") as r:  # key 'ip': the same bucket on every route
        assert r.status == 429 and r.headers["X-Request-Id"]


async def test_redis_limit_is_shared_by_two_gateways(
    demo_backends: Backends, start_gateway: StartGateway, prefix: str
) -> None:
    config = {
        "policy": "redis",
        "redis": {"url": REDIS_URL, "key_prefix": prefix},
        "timeout_ms": 2000,  # a test of sharing, not latency: a busy CI box must not make it fail open
        "limits": [{"name": "shared", "key": "global", "burst": 5, "per_second": 0.001}],
    }
    first = await start_gateway(limited(demo_backends, config))
    second = await start_gateway(limited(demo_backends, config))
    results = await asyncio.gather(*(echo(gw) for gw in [first, second] * 10))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    assert all(h["Retry-After"] == "1000" for s, h, _ in results if s == 429)
    assert sorted(h["RateLimit-Remaining"] for s, h, _ in results if s == 200) == ["0", "1", "2", "3", "4"]


class TierFromHeader(BasePolicy):
    """Stands in for the API-key policy, which sets the tier."""

    name = "test_tier"

    async def on_request(self, call: Call) -> None:
        tier = call.headers.get("X-Test-Tier")
        if tier:
            call.attributes["tier"] = tier


@pytest.fixture
def tier_policy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    registry = policies._registry

    def with_tier() -> dict[str, policies.PolicySpec]:
        return {**registry(), "test_tier": policies.PolicySpec(PolicyConfig, lambda _: TierFromHeader())}

    monkeypatch.setattr(policies, "_registry", with_tier)
    return {"name": "test_tier"}


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_tiers_and_several_limits(
    backend: str,
    demo_backends: Backends,
    start_gateway: StartGateway,
    prefix: str,
    tier_policy: dict[str, Any],
) -> None:
    config = {
        "policy": backend,
        "redis": {"url": REDIS_URL, "key_prefix": prefix},
        "timeout_ms": 2000,  # a test of sharing, not latency: a busy CI box must not make it fail open
        "limits": [
            {
                "name": "per_user",
                "key": "header:X-User",
                "burst": 2,
                "per_second": 0.001,
                "tiers": {"gold": {"burst": 4}},
            },
            {"name": "route_total", "key": "route", "burst": 5, "per_second": 0.001},
        ],
    }
    gw = await start_gateway(limited(demo_backends, config, tier_policy))
    basic = [await echo(gw, **{"X-User": "basic"}) for _ in range(3)]
    assert [s for s, _, _ in basic] == [200, 200, 429]
    assert basic[2][2]["message"] == "rate limit exceeded: per_user"
    gold = [await echo(gw, **{"X-User": "gold", "X-Test-Tier": "gold"}) for _ in range(4)]
    assert [s for s, _, _ in gold] == [200, 200, 200, 429]  # gold's own 4, but the route's 5 ran out
    assert gold[3][2]["message"] == "rate limit exceeded: route_total"
    # The most restrictive limit is reported: gold had 3 of 4 left, the route 2 of 5 after its first call.
    assert (gold[0][1]["RateLimit-Limit"], gold[0][1]["RateLimit-Remaining"]) == ("5", "2")
    assert (gold[2][1]["RateLimit-Limit"], gold[2][1]["RateLimit-Remaining"]) == ("5", "0")
    async with gw.http.get(f"{gw.url}/v1/items/1", headers={"X-User": "other"}) as r:
        assert r.status == 200  # another route, its own route_total
        assert r.headers["RateLimit-Remaining"] == "1"  # per_user: 2 - 1 is lower than route_total's 4


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_unreachable(
    fail_open: bool, demo_backends: Backends, start_gateway: StartGateway
) -> None:
    config = {
        "policy": "redis",
        "redis": {"url": "redis://127.0.0.1:1/0"},
        "fail_open": fail_open,
        "breaker": {"failures": 2, "cooldown_s": 30},
        "limits": [LIMIT],
    }
    gw = await start_gateway(limited(demo_backends, config))
    results = [await echo(gw) for _ in range(5)]
    for status, headers, body in results:
        assert "RateLimit-Limit" not in headers  # nothing was decided, nothing is claimed
        if fail_open:
            assert status == 200
        else:
            assert status == 503 and body["code"] == 14 and body["message"] == "rate limiter unavailable"
    if not fail_open:  # 1 s while the breaker is closed, then the rest of its cool-down
        assert [h["Retry-After"] for _, h, _ in results][:2] == ["1", "30"]
        assert 28 <= int(results[-1][1]["Retry-After"]) <= 30


async def _timed(gw: Gateway) -> tuple[int, float]:
    started = time.perf_counter()
    status, _, _ = await echo(gw)
    return status, time.perf_counter() - started


@pytest.mark.parametrize("fail_open", [True, False])
async def test_hung_redis_costs_the_timeout_until_the_breaker_opens(
    fail_open: bool, hung_redis: str, demo_backends: Backends, start_gateway: StartGateway
) -> None:
    timeout_s = 0.2  # well above a loaded box's request time, so "did not wait" is unambiguous
    config = {
        "policy": "redis",
        "redis": {"url": hung_redis},
        "fail_open": fail_open,
        "timeout_ms": 200,
        "breaker": {"failures": 3, "cooldown_s": 30},
        "limits": [LIMIT],
    }
    gw = await start_gateway(limited(demo_backends, config))
    await echo(gw)  # warm the client session and the upstream channel; the first of the 3 failures
    timed = [await _timed(gw) for _ in range(19)]
    expected = 200 if fail_open else 503
    assert {status for status, _ in timed} == {expected}
    assert all(elapsed >= timeout_s for _, elapsed in timed[:2])  # failures 2 and 3 wait the timeout
    assert timed[-1][1] < timeout_s  # the 20th request: breaker open, nobody waits
    assert sum(elapsed for _, elapsed in timed[2:]) < timeout_s * 5


async def test_redis_script_matches_the_local_math(redis_server: str, prefix: str) -> None:
    """The contract between `bucket.py` and the Lua script: same clock, same answers, to the bit."""
    remote = RedisBackend(redis_server, prefix, timeout_s=1.0)
    await remote.start()
    clock = [5000.0]
    local = LocalBackend(clock=lambda: clock[0])
    rng = random.Random(7)
    limits = [Bucket("a", "a:x", 3, 0.7), Bucket("b", "b:x", 10, 2.5), Bucket("c", "c:y", 1, 0.1)]
    try:
        for _ in range(400):
            clock[0] += rng.choice([0.0, 0.01, 0.1, 0.37, 1.0, 3.0])
            chosen = rng.sample(limits, rng.randint(1, 3))
            assert await remote.take_at(chosen, clock[0]) == local.take_now(chosen)
        client = aioredis.Redis.from_url(redis_server)
        try:
            await client.script_flush()  # as after a Redis restart: EVALSHA reloads the script
            verdict = await remote.take([Bucket("d", "d:z", 2, 1.0)])
            assert verdict.allowed and verdict.levels[0].remaining == 1
            ttl = await client.pttl(prefix + "d:z")
            assert 0 < ttl <= 1001  # the bucket vanishes when it would be full again
        finally:
            await client.aclose()
        assert 1 <= await remote.delete_prefix() <= 4
    finally:
        await remote.stop()


async def test_connection_opens_in_start_and_closes_in_stop(redis_server: str, prefix: str) -> None:
    async def ours() -> int:
        client = aioredis.Redis.from_url(redis_server)
        try:
            return sum(1 for c in await client.client_list() if c.get("name") == CLIENT_NAME)
        finally:
            await client.aclose()

    backend = RedisBackend(redis_server, prefix, timeout_s=1.0)
    before = await ours()
    from gateway.policies.rate_limit import RateLimit, RateLimitConfig

    policy = RateLimit(RouteConfigs(RateLimitConfig()), backend)
    assert await ours() == before  # building connects nothing
    await policy.start()
    await backend.take([Bucket("l", "l:k", 1, 1.0)])
    assert await ours() == before + 1
    await policy.stop()
    await asyncio.sleep(0.05)
    assert await ours() == before


async def test_a_timed_out_reply_never_answers_the_next_request(redis_server: str, prefix: str) -> None:
    """A slow (not dead) Redis: requests time out, and once it recovers no stale reply is read."""
    backend = RedisBackend(redis_server, prefix, timeout_s=0.05, max_connections=2)
    await backend.start()
    other = aioredis.Redis.from_url(redis_server)
    try:
        await backend.take([Bucket("l", "l:warm", 100, 1.0)])
        blocker = asyncio.create_task(other.eval(redis_server_support.BUSY_LUA, 0, 0.3))  # Redis runs one script at a time
        await asyncio.sleep(0.02)
        for i in range(3):
            with pytest.raises(LimiterUnavailable, match="did not answer within 50 ms"):
                await backend.take([Bucket("l", f"l:{i}", 100, 1.0)])
        await blocker
        remaining = [
            (await backend.take([Bucket("l", "l:after", 100, 1.0)])).levels[0].remaining for _ in range(6)
        ]
        assert remaining == [99, 98, 97, 96, 95, 94]
    finally:
        await other.aclose()
        await backend.stop()


async def test_requests_asking_together_share_one_round_trip_and_answer_as_if_alone(
    redis_server: str, prefix: str
) -> None:
    """Five requests in one loop iteration on a bucket of 3: one script call, decided in arrival order."""
    backend = RedisBackend(redis_server, prefix, timeout_s=1.0)
    await backend.start()
    try:
        shared = Bucket("s", "s:k", 3, 0.001)
        other = Bucket("o", "o:k", 10, 0.001)
        asks = [[shared], [shared, other], [other], [shared], [shared, other]]
        verdicts = await asyncio.gather(*(backend.take(buckets) for buckets in asks))
        assert backend.round_trips == 1
        assert [v.allowed for v in verdicts] == [True, True, True, True, False]
        assert [lv.remaining for lv in verdicts[1].levels] == [1, 9]
        assert verdicts[2].levels[0].remaining == 8
        assert verdicts[3].levels[0].remaining == 0  # the third token of `shared`
        # The refused fifth request spent nothing anywhere: `other` still holds 8.
        assert [lv.remaining for lv in verdicts[4].levels] == [0, 8] and verdicts[4].levels[0].retry_after_s > 0
        # Asked one after the other, each is its own round trip.
        await backend.take([other])
        await backend.take([other])
        assert backend.round_trips == 3
    finally:
        await backend.delete_prefix()
        await backend.stop()


async def test_stop_fails_the_requests_still_waiting(redis_server: str, prefix: str) -> None:
    backend = RedisBackend(redis_server, prefix, timeout_s=1.0)
    await backend.start()
    waiting = asyncio.ensure_future(backend.take([Bucket("l", "l:stop", 5, 1.0)]))
    await asyncio.sleep(0)  # it has asked; its batch is not sent yet
    await backend.stop()
    with pytest.raises(LimiterUnavailable, match="stopped"):
        await waiting


async def test_one_failed_round_trip_is_one_breaker_failure(hung_redis: str) -> None:
    """Six requests share one timed-out script call: the breaker (3 failures) counts one, stays closed."""
    from gateway.policies.rate_limit import RateLimitConfig, build
    from gateway.policies.rate_limit.breaker import BreakerState

    cfg = RateLimitConfig(
        policy="redis",
        redis={"url": hung_redis},
        timeout_ms=100,
        breaker={"failures": 3, "cooldown_s": 30},
        limits=[LIMIT],
    )
    policy = build(RouteConfigs(cfg))
    await policy.start()
    try:
        calls = [Call(request_id=str(i), method="GET", path="/", client_ip=f"10.0.0.{i}") for i in range(6)]
        await asyncio.gather(*(Pipeline((policy,)).on_request(c) for c in calls))  # fail_open admits all
        assert all(c.attributes["ratelimit"]["fallback"] == "open" for c in calls)
        assert policy.fallbacks == 6
        assert policy.breaker is not None and policy.breaker.state is BreakerState.CLOSED
        for _ in range(2):  # two more failed round trips open it
            await Pipeline((policy,)).on_request(Call(request_id="x", method="GET", path="/", client_ip="10.0.1.1"))
        assert policy.breaker.state is BreakerState.OPEN
    finally:
        await policy.stop()
