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
        self._routes: dict[str | None, _RouteSeries] = {}  # one lookup per call finds all it counts in
        self._remove_hook: Callable[[], None] | None = None if self._eager else before_collect(self.push)
        self._one_config = not configs.by_route  # no per-route override: no lookup per request
        default = configs.default
        # The default's switches as plain attributes (a pydantic model's are slower to read).
        self._enabled, self._latency, self._upstream_latency = (
            default.enabled, default.latency, default.upstream_latency
        )
        # The usual case in one flag: one config, enabled, one worker (reset by `stop`).
        self._plain = self._one_config and self._enabled and not self._eager

    async def stop(self) -> None:
        # A reload stops this pipeline while its last calls may still complete: they write through.
        self.push()
        self._eager = True
        self._plain = False
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None

    def push(self) -> None:
        """Move every pending tally into the prometheus-client metrics."""
        for series in self._routes.values():
            for entry in series.requests.values():
                if entry[0]:
                    entry[1].inc(entry[0])
                    entry[0] = 0
            if series.duration is not None:
                series.duration.push()
            for tally in series.upstreams.values():
                tally.push()
        in_flight = len(self._in_flight)
        if in_flight != self._in_flight_pushed:
            HTTP_REQUESTS_IN_FLIGHT.inc(in_flight - self._in_flight_pushed)
            self._in_flight_pushed = in_flight

    def on_request(self, call: Call) -> None:
        if self._plain:
            self._in_flight.add(id(call))
        elif self._enabled if self._one_config else self.configs.for_call(call).enabled:
            self._in_flight.add(id(call))
            if self._eager:
                self.push()

    def on_complete(self, call: Call) -> None:
        self._in_flight.discard(id(call))
        if self._plain:
            self._count(call, self._latency, self._upstream_latency)
        elif self._one_config:
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
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = _RouteSeries(route)
        method, status = call.method, call.status
        if route is None and method not in _METHODS:
            method = OTHER_METHOD
        entry = series.requests.get((method, status))
        if entry is None:
            entry = series.count(method, status)
        entry[0] += 1
        # Tally.observe written out (twice per call): counts[bisect_left(bounds, value)] += 1
        if latency:
            duration = series.duration or series.timed()
            elapsed = perf_counter() - call.started  # call.elapsed_s
            duration.counts[bisect_left(duration.bounds, elapsed)] += 1
            duration.total += elapsed
        upstream_s = call.upstream_s
        if upstream_latency and upstream_s > 0.0 and call.upstream is not None:
            upstream = series.upstreams.get(call.upstream) or series.upstream(call.upstream)
            upstream.counts[bisect_left(upstream.bounds, upstream_s)] += 1
            upstream.total += upstream_s


class _RouteSeries:
    """The children one route writes, resolved once (`labels()` is a locked dict lookup), with the
    counts not yet pushed: requests as [pending, child] by (method, status), latencies as `Tally`s."""

    __slots__ = ("duration", "label", "requests", "upstreams")

    def __init__(self, route: str | None) -> None:
        self.label = route or UNMATCHED
        self.requests: dict[tuple[str, int], list] = {}  # type: ignore[type-arg]
        self.duration: Tally | None = None  # made on first use: a route with latency off shows no series
        self.upstreams: dict[str, Tally] = {}

    def count(self, method: str, status: int) -> list:  # type: ignore[type-arg]
        child: Counter = HTTP_REQUESTS.labels(self.label, method, str(status))
        entry = self.requests[(method, status)] = [0, child]
        return entry

    def timed(self) -> Tally:
        self.duration = Tally(HTTP_REQUEST_DURATION.labels(self.label))
        return self.duration

    def upstream(self, name: str) -> Tally:
        tally = self.upstreams[name] = Tally(UPSTREAM_DURATION.labels(self.label, name))
        return tally


def build(configs: RouteConfigs[MetricsConfig]) -> Metrics:
    return Metrics(configs)
