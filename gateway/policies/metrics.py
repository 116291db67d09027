"""Metrics: requests, latencies and requests in flight per route, read from the finished `Call`.

`on_request` counts the call in flight (from routing on: a request the router refused is counted
only when it completes); `on_complete` counts it by route, method and status and observes its
total and upstream latencies. The metrics themselves are declared in `gateway.metrics_registry`
and exposed at `/metrics` on the admin listener. List this policy first, so that it sees every
rejection.

One worker (no multiprocess directory): a request adds to plain ints and floats (`Tally`, a
bisect into the histogram's bounds) and formats no string, takes no lock; the tallies are pushed
into the prometheus-client metrics right before any collection (`before_collect`), so a scrape is
exact. Several workers: the scrape of worker 0 reads the other workers' files, which nothing would
push at that moment, so every request writes through to prometheus-client at once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter

from prometheus_client import Counter
from pydantic import Field

from gateway.call import Call
from gateway.metrics_registry import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_FLIGHT,
    UPSTREAM_DURATION,
    Tally,
    before_collect,
    multiprocess_dir,
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
        self._eager = multiprocess_dir() is not None
        self._in_flight: set[int] = set()  # ids of calls counted in flight, so only those are uncounted
        self._in_flight_pushed = 0
        # Children resolved once per label tuple; counts as [pending, child] pairs.
        self._requests: dict[tuple[str | None, str, int], list] = {}  # type: ignore[type-arg]
        self._durations: dict[str | None, Tally] = {}
        self._upstream: dict[tuple[str | None, str], Tally] = {}
        self._remove_hook: Callable[[], None] | None = None if self._eager else before_collect(self.push)
        self._one_config = not configs.by_route  # no per-route override: no lookup per request
        default = configs.default
        # The default's switches as plain attributes (a pydantic model's are slower to read).
        self._enabled, self._latency, self._upstream_latency = (
            default.enabled, default.latency, default.upstream_latency
        )

    async def stop(self) -> None:
        # A reload stops this pipeline while its last calls may still complete: they write through.
        self.push()
        self._eager = True
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None

    def push(self) -> None:
        """Move every pending tally into the prometheus-client metrics."""
        for entry in self._requests.values():
            if entry[0]:
                entry[1].inc(entry[0])
                entry[0] = 0
        for tally in self._durations.values():
            tally.push()
        for tally in self._upstream.values():
            tally.push()
        in_flight = len(self._in_flight)
        if in_flight != self._in_flight_pushed:
            HTTP_REQUESTS_IN_FLIGHT.inc(in_flight - self._in_flight_pushed)
            self._in_flight_pushed = in_flight

    def on_request(self, call: Call) -> None:
        if self._enabled if self._one_config else self.configs.for_call(call).enabled:
            self._in_flight.add(id(call))
            if self._eager:
                self.push()

    def on_complete(self, call: Call) -> None:
        self._in_flight.discard(id(call))
        if self._one_config:
            if self._enabled:
                self._count(call, self._latency, self._upstream_latency)
        else:
            cfg = self.configs.for_call(call)
            if cfg.enabled:
                self._count(call, cfg.latency, cfg.upstream_latency)
        if self._eager:
            self.push()

    def _count(self, call: Call, latency: bool, upstream_latency: bool) -> None:
        route = call.route
        method = call.method if route is not None or call.method in _METHODS else OTHER_METHOD
        key = (route, method, call.status)
        entry = self._requests.get(key)
        if entry is None:
            child: Counter = HTTP_REQUESTS.labels(route or UNMATCHED, method, str(call.status))
            entry = self._requests[key] = [0, child]
        entry[0] += 1
        # Tally.observe written out (twice per request): counts[bisect_left(bounds, value)] += 1
        if latency:
            duration = self._durations.get(route)
            if duration is None:
                duration = self._durations[route] = Tally(HTTP_REQUEST_DURATION.labels(route or UNMATCHED))
            elapsed = perf_counter() - call.started  # call.elapsed_s
            duration.counts[bisect_left(duration.bounds, elapsed)] += 1
            duration.total += elapsed
        upstream_s = call.upstream_s
        if upstream_latency and call.upstream is not None and upstream_s > 0.0:
            upstream = self._upstream.get((route, call.upstream))
            if upstream is None:
                upstream = self._upstream[(route, call.upstream)] = Tally(
                    UPSTREAM_DURATION.labels(route or UNMATCHED, call.upstream)
                )
            upstream.counts[bisect_left(upstream.bounds, upstream_s)] += 1
            upstream.total += upstream_s


def build(configs: RouteConfigs[MetricsConfig]) -> Metrics:
    return Metrics(configs)
