"""Metrics policy and registry: what one call adds to which series, and the text exposition (no sockets)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.metrics_registry import HTTP_REQUEST_DURATION, REGISTRY, UPSTREAM_DURATION, render
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.base import RouteConfigs
from gateway.policies.metrics import Metrics, MetricsConfig

ROUTE = "unit.v1.MetricsService.Get"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_call(**fields: Any) -> Call:
    call = Call(request_id="r", method="GET", path="/x", client_ip="127.0.0.1")
    for key, item in fields.items():
        setattr(call, key, item)
    return call


async def test_a_call_is_counted_timed_and_released() -> None:
    policy = Metrics(RouteConfigs(MetricsConfig()))
    labels = {"route": ROUTE, "method": "GET", "status": "200"}
    before = value("portcullis_http_requests_total", **labels)
    durations = value("portcullis_http_request_duration_seconds_count", route=ROUTE)
    upstream = value("portcullis_upstream_duration_seconds_count", route=ROUTE, upstream="unit")
    upstream_sum = value("portcullis_upstream_duration_seconds_sum", route=ROUTE, upstream="unit")
    in_flight = value("portcullis_http_requests_in_flight")
    calls = [make_call(route=ROUTE, service="unit.v1.MetricsService", upstream="unit") for _ in range(3)]
    for call in calls:
        policy.on_request(call)
    assert value("portcullis_http_requests_in_flight") == in_flight + 3
    for call in calls:
        call.status, call.upstream_s = 200, 0.25
        policy.on_complete(call)
    assert value("portcullis_http_requests_in_flight") == in_flight
    assert value("portcullis_http_requests_total", **labels) == before + 3
    assert value("portcullis_http_request_duration_seconds_count", route=ROUTE) == durations + 3
    assert value("portcullis_upstream_duration_seconds_count", route=ROUTE, upstream="unit") == upstream + 3
    assert value("portcullis_upstream_duration_seconds_sum", route=ROUTE, upstream="unit") == pytest.approx(
        upstream_sum + 0.75
    )


async def test_unrouted_calls_use_bounded_labels_and_are_never_in_flight() -> None:
    policy = Metrics(RouteConfigs(MetricsConfig()))
    in_flight = value("portcullis_http_requests_in_flight")
    other = value("portcullis_http_requests_total", route="unmatched", method="OTHER", status="404")
    get = value("portcullis_http_requests_total", route="unmatched", method="GET", status="404")
    for method in ("BREW", "WHATEVER", "GET"):
        policy.on_complete(make_call(method=method, status=404))  # on_request never ran: no route
    assert value("portcullis_http_requests_in_flight") == in_flight
    assert (
        value("portcullis_http_requests_total", route="unmatched", method="OTHER", status="404") == other + 2
    )
    assert value("portcullis_http_requests_total", route="unmatched", method="GET", status="404") == get + 1


async def test_no_upstream_time_no_upstream_observation_and_disabled_routes() -> None:
    configs = RouteConfigs(
        MetricsConfig(),
        {"unit.v1.Quiet": MetricsConfig(enabled=False), "unit.v1.Fast": MetricsConfig(latency=False)},
    )
    policy = Metrics(configs)
    rejected = make_call(route="unit.v1.Loud.Get", service="unit.v1.Loud", upstream="unit", status=401)
    quiet = make_call(route="unit.v1.Quiet.Get", service="unit.v1.Quiet", upstream="unit", status=200)
    fast = make_call(route="unit.v1.Fast.Get", service="unit.v1.Fast", upstream="unit", status=200)
    in_flight = value("portcullis_http_requests_in_flight")
    for call in (rejected, quiet, fast):
        policy.on_request(call)
    assert value("portcullis_http_requests_in_flight") == in_flight + 2  # the quiet route is not counted
    for call in (rejected, quiet, fast):
        policy.on_complete(call)
    assert value("portcullis_http_requests_in_flight") == in_flight
    assert value("portcullis_http_requests_total", route="unit.v1.Loud.Get", method="GET", status="401") == 1
    assert value("portcullis_upstream_duration_seconds_count", route="unit.v1.Loud.Get", upstream="unit") == 0
    assert value("portcullis_http_requests_total", route="unit.v1.Quiet.Get", method="GET", status="200") == 0
    assert value("portcullis_http_requests_total", route="unit.v1.Fast.Get", method="GET", status="200") == 1
    assert value("portcullis_http_request_duration_seconds_count", route="unit.v1.Fast.Get") == 0


def test_tallied_observations_land_in_the_buckets_observe_would_use() -> None:
    # One worker: a request adds to plain numbers, pushed before any read; the buckets must match
    # prometheus-client's own `observe` (le is inclusive, +Inf catches the rest).
    route = "unit.v1.Buckets.Get"
    policy = Metrics(RouteConfigs(MetricsConfig()))
    reference = UPSTREAM_DURATION.labels(route, "reference")
    for seconds in (0.001, 0.0010001, 0.25, 0.0, 31.0, 7.5):
        call = make_call(route=route, service="unit.v1.Buckets", upstream="unit", status=200, upstream_s=seconds)
        policy.on_request(call)
        policy.on_complete(call)
        if seconds > 0.0:
            reference.observe(seconds)
    for le in ("0.001", "0.0025", "0.25", "5.0", "10.0", "30.0", "+Inf"):
        mine = value("portcullis_upstream_duration_seconds_bucket", route=route, upstream="unit", le=le)
        ref = value("portcullis_upstream_duration_seconds_bucket", route=route, upstream="reference", le=le)
        assert mine == ref, le
    assert value("portcullis_upstream_duration_seconds_sum", route=route, upstream="unit") == pytest.approx(
        0.001 + 0.0010001 + 0.25 + 31.0 + 7.5
    )
    assert value("portcullis_upstream_duration_seconds_bucket", route=route, upstream="unit", le="+Inf") == 5


_FOLDED = itertools.count()
_BOUNDS = (0.0, 0.001, 0.0025, 0.005, 0.25, 5.0, 10.0, 30.0)


@settings(max_examples=25, deadline=None)
@given(
    seconds=st.lists(
        st.one_of(st.sampled_from(_BOUNDS), st.floats(0.0, 60.0, allow_nan=False)), min_size=1, max_size=40
    ),
    repeat=st.sampled_from([1, 7, 130]),
)
def test_folded_observations_land_where_observe_puts_them(seconds: list[float], repeat: int) -> None:
    # Calls are folded a few at a time (a bisect each), many at a time (sorted, a bisect per bound),
    # when a cell's list is full and at the scrape: every way must give observe's buckets and count.
    route = f"unit.v1.Folded.Get{next(_FOLDED)}"
    policy = Metrics(RouteConfigs(MetricsConfig()))
    ref_duration = HTTP_REQUEST_DURATION.labels(route + "-reference")
    ref_upstream = UPSTREAM_DURATION.labels(route, "reference")
    for taken in seconds * repeat:
        call = make_call(route=route, service="unit.v1.Folded", upstream="unit", status=200, upstream_s=taken)
        policy.on_request(call)
        call.finished = call.started + taken
        policy.on_complete(call)
        ref_duration.observe(call.finished - call.started)
        if taken > 0.0:
            ref_upstream.observe(taken)
    n = len(seconds) * repeat
    assert value("portcullis_http_requests_total", route=route, method="GET", status="200") == n
    for le in ("0.001", "0.0025", "0.005", "0.25", "5.0", "10.0", "30.0", "+Inf"):
        mine = value("portcullis_upstream_duration_seconds_bucket", route=route, upstream="unit", le=le)
        ref = value("portcullis_upstream_duration_seconds_bucket", route=route, upstream="reference", le=le)
        assert mine == ref, le
        mine = value("portcullis_http_request_duration_seconds_bucket", route=route, le=le)
        ref = value("portcullis_http_request_duration_seconds_bucket", route=route + "-reference", le=le)
        assert mine == ref, le
    assert value("portcullis_http_request_duration_seconds_sum", route=route) == pytest.approx(
        value("portcullis_http_request_duration_seconds_sum", route=route + "-reference")
    )


async def test_a_stopped_policy_pushes_what_it_holds_and_then_writes_through() -> None:
    route = "unit.v1.Stopped.Get"
    policy = Metrics(RouteConfigs(MetricsConfig()))
    labels = {"route": route, "method": "GET", "status": "200"}
    first, late = make_call(route=route, status=200), make_call(route=route, status=200)
    policy.on_request(first)
    policy.on_request(late)
    policy.on_complete(first)
    await policy.stop()  # a reload: this pipeline is done, but `late` is still running
    assert REGISTRY.get_sample_value("portcullis_http_requests_total", labels) == 1
    policy.on_complete(late)  # no collection hook any more: counted at once
    assert REGISTRY.get_sample_value("portcullis_http_requests_total", labels) == 2
    assert value("portcullis_http_request_duration_seconds_count", route=route) == 2


async def test_calls_in_flight_across_a_stop_and_on_both_paths() -> None:
    # The usual case marks a call by keeping it in a set (its on_request is the set's add); a
    # per-route config marks call.in_flight. Either way the gauge comes back, a stop in between.
    in_flight = value("portcullis_http_requests_in_flight")
    usual = Metrics(RouteConfigs(MetricsConfig()))
    routed = Metrics(RouteConfigs(MetricsConfig(), {"unit.v1.Quiet": MetricsConfig(enabled=False)}))
    assert usual._plain and not routed._plain
    calls = {p: [make_call(route=ROUTE, service="unit.v1.MetricsService", status=200) for _ in range(3)]
             for p in (usual, routed)}
    for policy, started in calls.items():
        for call in started:
            policy.on_request(call)
    assert [c.in_flight for c in calls[usual]] == [False] * 3 and all(c.in_flight for c in calls[routed])
    assert value("portcullis_http_requests_in_flight") == in_flight + 6
    for policy, started in calls.items():
        policy.on_complete(started[0])
        await policy.stop()
        for call in started[1:]:
            policy.on_complete(call)
        policy.on_complete(make_call(status=404))  # never started: changes nothing
    assert value("portcullis_http_requests_in_flight") == in_flight
    assert not usual._live and routed._in_flight == 0


def test_render_exposes_every_family_and_upstream_health() -> None:
    class Upstream:
        def health_report(self) -> dict[str, bool]:
            return {"10.0.0.1:50051": True, "10.0.0.2:50051": False}

    families = {f.name: f for f in text_string_to_metric_families(render({"unit": Upstream()}).decode())}
    for name in (
        "portcullis_http_requests",
        "portcullis_http_request_duration_seconds",
        "portcullis_upstream_duration_seconds",
        "portcullis_http_requests_in_flight",
        "portcullis_http_connections_open",
        "portcullis_ratelimit_rejections",
        "portcullis_auth_failures",
        "portcullis_tracing_spans_failed",
        "portcullis_upstream_healthy",
    ):
        assert name in families, name
    health = {
        (s.labels["upstream"], s.labels["address"]): s.value
        for s in families["portcullis_upstream_healthy"].samples
    }
    assert health == {("unit", "10.0.0.1:50051"): 1.0, ("unit", "10.0.0.2:50051"): 0.0}


def test_bad_config_names_the_key() -> None:
    config = GatewayConfig.model_validate(
        {
            "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
            "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
            "services": {"echo.v1.EchoService": {"backend": "echo"}},
            "policies": [{"name": "access_log", "config": {}}, {"name": "metrics", "config": {"bogus": 1}}],
        }
    )
    with pytest.raises(
        PolicyConfigError, match=r"policies\.1\.config\.bogus: Extra inputs are not permitted"
    ):
        build_pipeline(config)
