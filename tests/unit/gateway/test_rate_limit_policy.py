"""The `rate_limit` policy without sockets: headers, 429s, tiers, several limits, per-route plans,
the failure mode behind the breaker, and config errors that name the key path."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.metrics_registry import REGISTRY
from gateway.pipeline import Pipeline, settle
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.base import RouteConfigs
from gateway.policies.rate_limit import RateLimit, RateLimitConfig, build
from gateway.policies.rate_limit.breaker import CircuitBreaker
from gateway.policies.rate_limit.bucket import Bucket, LimiterUnavailable, Verdict
from gateway.policies.rate_limit.local import LocalBackend
from gateway.policies.rate_limit.redis import RedisBackend
from translators.errors import GatewayError

ECHO = "echo.v1.EchoService"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def call(
    route: str = f"{ECHO}.Echo", ip: str = "192.0.2.1", consumer: str | None = None, **attributes: Any
) -> Call:
    c = Call(request_id="r", method="POST", path="/v1/echo", client_ip=ip, route=route, service=ECHO)
    c.consumer = consumer
    c.attributes.update(attributes)
    return c


def policy(
    config: dict[str, Any], by_route: dict[str, dict[str, Any]] | None = None
) -> tuple[RateLimit, FakeClock]:
    default = RateLimitConfig.model_validate(config)
    routes = {k: RateLimitConfig.model_validate({**config, **v}) for k, v in (by_route or {}).items()}
    clock = FakeClock()
    return RateLimit(RouteConfigs(default, routes), LocalBackend(clock=clock)), clock


async def admitted(p: RateLimit, c: Call) -> bool:
    try:
        await settle(Pipeline((p,)).on_request(c))
    except GatewayError as err:
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    return True


async def test_headers_and_429() -> None:
    p, clock = policy({"limits": [{"name": "per_ip", "key": "ip", "burst": 2, "per_second": 0.5}]})
    first = call()
    await settle(Pipeline((p,)).on_request(first))
    assert first.response_headers == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": "2",
    }
    await settle(Pipeline((p,)).on_request(call()))
    refused = call()
    labels = {"route": f"{ECHO}.Echo", "limit": "per_ip"}
    before = REGISTRY.get_sample_value("portcullis_ratelimit_rejections_total", labels) or 0.0
    with pytest.raises(GatewayError) as info:
        await settle(Pipeline((p,)).on_request(refused))
    assert REGISTRY.get_sample_value("portcullis_ratelimit_rejections_total", labels) == before + 1
    err = info.value
    assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.message == "rate limit exceeded: per_ip"
    assert err.headers == {"Retry-After": "2"}  # one token at 0.5/s
    assert refused.response_headers["RateLimit-Remaining"] == "0"
    assert refused.response_headers["RateLimit-Reset"] == "4"
    assert refused.attributes["ratelimit"] == {"rejected": "per_ip", "retry_after_s": 2}
    assert err.details[0]["violations"][0]["subject"] == "limit:per_ip"
    assert await admitted(p, call(ip="192.0.2.2"))  # another address, another bucket
    clock.now += 1.5
    with pytest.raises(GatewayError) as info:
        await settle(Pipeline((p,)).on_request(call()))
    assert info.value.headers["Retry-After"] == "1"  # 0.5 s left, rounded up


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(1, 2_000),
    rate=st.sampled_from([0.01, 0.5, 1.0, 3.0, 1000.0, 1_000_000.0]),
    # 0 and whole seconds: whole numbers of tokens held again and again (remembered headers, _held)
    steps=st.lists(
        st.tuples(
            st.one_of(st.sampled_from([0.0, 0.0, 1.0, 2.0]), st.floats(0.0, 5.0, allow_nan=False)), st.booleans()
        ),
        min_size=1,
        max_size=24,
    ),
)
async def test_usual_path_headers_as_the_general_rule(
    burst: int, rate: float, steps: list[tuple[float, bool]]
) -> None:
    # One untiered limit decides on the usual path (full buckets with headers made once, whole
    # numbers held remembered); the same limit with a tier nobody has takes the general path
    # (take_now, a Level, _apply). Same answers.
    limit = {"name": "per_consumer", "key": "consumer", "burst": burst, "per_second": rate}
    usual, usual_clock = policy({"limits": [limit]})
    general, general_clock = policy({"limits": [{**limit, "tiers": {"nobody": {"burst": 1}}}]})
    assert usual._usual_one is not None and general._default_plan.one is None
    for advance, before in steps:
        usual_clock.now += advance
        general_clock.now += advance
        a, b = call(consumer="c"), call(consumer="c")
        if before:  # a header an earlier policy set (CORS): kept first, in order
            a.response_headers["Access-Control-Allow-Origin"] = b.response_headers["Access-Control-Allow-Origin"] = "*"
        assert await admitted(usual, a) == await admitted(general, b)
        assert list(a.response_headers.items()) == list(b.response_headers.items())
        # A block is noted only when the headers are exactly its fields (nothing set before)
        block = a.response_block
        assert b.response_block is None
        if block is not None:
            assert not before and list(block.fields.items()) == list(a.response_headers.items())
            assert block.lines == "\r\n".join(f"{n}: {v}" for n, v in a.response_headers.items())


async def test_several_limits_report_the_most_restrictive() -> None:
    p, _ = policy(
        {
            "limits": [
                {"name": "per_consumer", "key": "consumer", "burst": 10, "per_second": 1},
                {"name": "route_total", "key": "route", "burst": 3, "per_second": 1},
            ]
        }
    )
    results = []
    for i in range(5):
        c = call(consumer=f"user{i % 2}")
        results.append((await admitted(p, c), c.response_headers["RateLimit-Remaining"]))
    assert results == [(True, "2"), (True, "1"), (True, "0"), (False, "0"), (False, "0")]
    with pytest.raises(GatewayError, match="route_total"):
        await settle(Pipeline((p,)).on_request(call(consumer="user9")))
    assert await admitted(p, call(route=f"{ECHO}.GetItem"))  # key 'route': each method its own bucket


async def test_tiers() -> None:
    limit = {
        "name": "per_consumer",
        "key": "consumer",
        "burst": 1,
        "per_second": 0.01,
        "tiers": {"gold": {"burst": 3}, "silver": {"per_second": 100}},
    }
    p, _ = policy({"limits": [limit]})
    gold = [await admitted(p, call(consumer="g", tier="gold")) for _ in range(4)]
    base = [await admitted(p, call(consumer="b")) for _ in range(2)]
    unknown = [await admitted(p, call(consumer="u", tier="platinum")) for _ in range(2)]
    assert gold == [True, True, True, False]
    assert base == [True, False] and unknown == [True, False]
    c = call(consumer="g2", tier="gold")
    await settle(Pipeline((p,)).on_request(c))
    assert c.response_headers["RateLimit-Limit"] == "3"


async def test_per_route_override_and_disable() -> None:
    base = {"limits": [{"name": "per_ip", "key": "ip", "burst": 1, "per_second": 0.01}]}
    p, _ = policy(
        base,
        {
            f"{ECHO}.GetItem": {"enabled": False},
            "library.v1.LibraryService": {
                "limits": [{"name": "lib", "key": "ip", "burst": 2, "per_second": 0.01}]
            },
        },
    )
    assert [await admitted(p, call(route=f"{ECHO}.GetItem")) for _ in range(3)] == [True] * 3
    lib = Call(
        request_id="r",
        method="GET",
        path="/",
        client_ip="192.0.2.1",
        route="library.v1.LibraryService.ListShelves",
        service="library.v1.LibraryService",
    )
    await settle(Pipeline((p,)).on_request(lib))
    assert lib.response_headers["RateLimit-Limit"] == "2"
    assert [await admitted(p, call()) for _ in range(2)] == [True, False]


async def test_trusted_proxy_address_is_counted() -> None:
    p, _ = policy(
        {
            "trusted_proxies": ["10.0.0.0/8"],
            "limits": [{"name": "per_ip", "key": "ip", "burst": 1, "per_second": 0.01}],
        }
    )

    def via_proxy(client: str) -> Call:
        c = call(ip="10.0.0.2")
        c.headers = {"X-Forwarded-For": f"6.6.6.6, {client}"}
        return c

    assert await admitted(p, via_proxy("198.51.100.1"))
    assert await admitted(p, via_proxy("198.51.100.2"))  # behind the same proxy, a different client
    assert not await admitted(p, via_proxy("198.51.100.1"))


class Unavailable:
    """A backend that cannot answer: what the redis backend reports for a dead or hung server."""

    def __init__(self) -> None:
        self.calls = 0

    async def take(self, buckets: Sequence[Bucket]) -> Verdict:
        self.calls += 1
        raise LimiterUnavailable("down")

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@pytest.mark.parametrize("fail_open", [True, False])
async def test_failure_mode_behind_the_breaker(fail_open: bool) -> None:
    cfg = RateLimitConfig.model_validate(
        {"fail_open": fail_open, "limits": [{"name": "l", "burst": 1, "per_second": 1}]}
    )
    clock = FakeClock()
    backend = Unavailable()
    p = RateLimit(RouteConfigs(cfg), backend, CircuitBreaker(3, 10.0, clock=clock))
    outcomes = []
    for _ in range(6):
        c = call()
        try:
            await settle(Pipeline((p,)).on_request(c))
            outcomes.append("pass")
        except GatewayError as err:
            assert err.code is grpc.StatusCode.UNAVAILABLE
            outcomes.append(err.headers["Retry-After"])
        assert c.attributes["ratelimit"]["fallback"] == ("open" if fail_open else "closed")
        assert "RateLimit-Limit" not in c.response_headers
    assert backend.calls == 3  # then the breaker is open: nobody waits on the backend
    assert outcomes == ["pass"] * 6 if fail_open else outcomes == ["1", "1", "10", "10", "10", "10"]
    assert p.fallbacks == 6
    clock.now += 10  # cool-down over: one request probes the backend, the others still fall back
    for _ in range(2):
        with contextlib.suppress(GatewayError):
            await settle(Pipeline((p,)).on_request(call()))
    assert backend.calls == 4


def test_build_picks_the_backend_and_does_not_connect() -> None:
    local = build(RouteConfigs(RateLimitConfig()))
    assert isinstance(local.backend, LocalBackend) and local.breaker is None
    remote = build(RouteConfigs(RateLimitConfig.model_validate({"policy": "redis", "timeout_ms": 20})))
    assert isinstance(remote.backend, RedisBackend) and remote.breaker is not None
    assert not remote.backend.started and remote.backend.timeout_s == 0.02


def gateway(
    policies: list[dict[str, Any]],
    services_policies: dict[str, Any] | None = None,
    methods: dict[str, Any] | None = None,
) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
            "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
            "services": {
                ECHO: {"backend": "echo", "policies": services_policies or {}, "methods": methods or {}}
            },
            "policies": policies,
        }
    )


LIMIT = {"name": "per_ip", "key": "ip", "burst": 5, "per_second": 1}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"limits": [{**LIMIT, "burst": -1}]},
            "policies.0.config.limits.0.burst: Input should be greater than",
        ),
        ({"limits": [{**LIMIT, "per_second": 0}]}, "policies.0.config.limits.0.per_second"),
        (
            {"limits": [{**LIMIT, "key": "user"}]},
            "policies.0.config.limits.0.key: Value error, unknown key 'user'",
        ),
        (
            {"limits": [{**LIMIT, "tiers": {"gold": {"burst": 0}}}]},
            "policies.0.config.limits.0.tiers.gold.burst",
        ),
        ({"limits": [LIMIT, LIMIT]}, "limit names must be unique"),
        ({"limits": [{**LIMIT, "name": "has space"}]}, "policies.0.config.limits.0.name"),
        ({"policy": "memcached"}, "policies.0.config.policy"),
        ({"redis": {"url": "http://x"}}, "policies.0.config.redis.url"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "policies.0.config.trusted_proxies.0"),
        ({"timeout_ms": 0}, "policies.0.config.timeout_ms"),
        ({"breaker": {"failures": 0}}, "policies.0.config.breaker.failures"),
        ({"limit": []}, "policies.0.config.limit: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_key_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(gateway([{"name": "rate_limit", "config": config}]))
    assert message in str(info.value)


def test_override_errors() -> None:
    entry = {"name": "rate_limit", "config": {"limits": [LIMIT]}}
    with pytest.raises(PolicyConfigError, match=rf"services\.{ECHO}\.policies\.rate_limit\.limits\.0\.burst"):
        build_pipeline(gateway([entry], {"rate_limit": {"limits": [{**LIMIT, "burst": -1}]}}))
    with pytest.raises(PolicyConfigError, match="'policy' is gateway-wide"):
        build_pipeline(gateway([entry], {"rate_limit": {"policy": "redis"}}))
    with pytest.raises(PolicyConfigError, match="'per_ip' is defined twice"):
        build_pipeline(
            gateway(
                [entry], None, {"Echo": {"policies": {"rate_limit": {"limits": [{**LIMIT, "burst": 9}]}}}}
            )
        )
    pipeline = build_pipeline(
        gateway([entry], {"rate_limit": {"fail_open": False, "trusted_proxies": ["10.0.0.0/8"]}})
    )
    assert [p.name for p in pipeline.policies] == ["rate_limit"]
