"""Metrics: requests, latencies and requests in flight per route, read from the finished `Call`.

`on_request` counts the call in flight (from routing on: a request the router refused is counted
only when it completes); `on_complete` counts it by route, method and status and observes its
total and upstream latencies. Label children are resolved once per label tuple and kept in dicts,
so a request costs a few dict look-ups, one increment and one or two observations, and formats no
string. The metrics themselves are declared in `gateway.metrics_registry` and exposed at
`/metrics` on the admin listener. List this policy first, so that it sees every rejection.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from pydantic import Field

from gateway.call import Call
from gateway.metrics_registry import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_FLIGHT,
    UPSTREAM_DURATION,
)
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs

UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405)
OTHER_METHOD = "OTHER"  # any non-standard method on an unmatched path: clients must not mint label values
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"))


class MetricsConfig(PolicyConfig):
    enabled: bool = Field(True, description="Record requests of these routes; disabled ones are not counted.")
    latency: bool = Field(True, description="Observe portcullis_http_request_duration_seconds.")
    upstream_latency: bool = Field(True, description="Observe portcullis_upstream_duration_seconds.")


class Metrics(BasePolicy):
    name = "metrics"

    def __init__(self, configs: RouteConfigs[MetricsConfig]) -> None:
        self.configs = configs
        self._in_flight: set[int] = set()  # ids of calls counted in flight, so only those are uncounted
        self._requests: dict[tuple[str | None, str, int], Counter] = {}
        self._durations: dict[str | None, Histogram] = {}
        self._upstream: dict[tuple[str | None, str], Histogram] = {}

    async def on_request(self, call: Call) -> None:
        if self.configs.for_call(call).enabled:
            self._in_flight.add(id(call))
            HTTP_REQUESTS_IN_FLIGHT.inc()

    async def on_complete(self, call: Call) -> None:
        key = id(call)
        if key in self._in_flight:
            self._in_flight.discard(key)
            HTTP_REQUESTS_IN_FLIGHT.dec()
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        route = call.route
        method = call.method if route is not None or call.method in _METHODS else OTHER_METHOD
        counter = self._requests.get((route, method, call.status))
        if counter is None:
            counter = self._requests[(route, method, call.status)] = HTTP_REQUESTS.labels(
                route or UNMATCHED, method, str(call.status)
            )
        counter.inc()
        if cfg.latency:
            duration = self._durations.get(route)
            if duration is None:
                duration = self._durations[route] = HTTP_REQUEST_DURATION.labels(route or UNMATCHED)
            duration.observe(call.elapsed_s)
        if cfg.upstream_latency and call.upstream is not None and call.upstream_s > 0.0:
            upstream = self._upstream.get((route, call.upstream))
            if upstream is None:
                upstream = self._upstream[(route, call.upstream)] = UPSTREAM_DURATION.labels(
                    route or UNMATCHED, call.upstream
                )
            upstream.observe(call.upstream_s)


def build(configs: RouteConfigs[MetricsConfig]) -> Metrics:
    return Metrics(configs)
