"""Metrics: requests, latencies and requests in flight per route, read from the finished `Call`.

`on_request` counts the call in flight (from routing on: a request the router refused is counted
only when it completes): in the usual case (one config, enabled, one worker) by putting it in a set
of live calls, `on_request` then being that set's `add` (C, no Python frame per request), else by
marking it (`call.in_flight`) and counting it; `on_complete` releases it, counts it by route,
method and status and observes its total and upstream latencies. The metrics themselves are
declared in `gateway.metrics_registry` and exposed at `/metrics` on the admin listener. List this
policy first, so that it sees every rejection.

A call finds everything it adds to with one dict lookup: a `_Cell` per (route, method, status,
upstream), made on first use, holding the request counter's child, the route's latency `Tally`
and the route and upstream's one, with the route's settings applied once (a route's settings
depend on its name and service only, and the service is a function of the route). The keys are
bounded: routes and upstreams come from config, a status is a number below 600, and a method is
either one a route matched or, on an unmatched path, a standard one or "OTHER".

One worker (no multiprocess directory): a request appends its two latencies to its cell's list and
formats no string, takes no lock; a cell's list is folded into the tallies (counts by bucket, sums)
when it holds `_FOLD_AT` values and right before any collection (`before_collect`), and the tallies
pushed into the prometheus-client metrics then, so a scrape is exact. Folding many values at once
sorts them and finds each bucket's share with one bisect per bound (`Tally.observe_many`), instead of a bisect per
value in Python. Several workers: the scrape of worker 0 reads the other workers' files, which
nothing would push at that moment, so every request writes through to prometheus-client at once.
"""

from __future__ import annotations

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
_FOLD_AT = 2048  # values a cell holds before they are folded (two per call): 16 KiB of pointers


class MetricsConfig(PolicyConfig):
    enabled: bool = Field(True, description="Record requests of these routes; disabled ones are not counted.")
    latency: bool = Field(True, description="Observe portcullis_http_request_duration_seconds.")
    upstream_latency: bool = Field(True, description="Observe portcullis_upstream_duration_seconds.")


class Metrics(BasePolicy):
    name = "metrics"

    def __init__(self, configs: RouteConfigs[MetricsConfig]) -> None:
        self.configs = configs
        self._eager = multiprocess_dir() is not None
        self._in_flight = 0  # calls this policy marked in flight and has not seen complete
        self._in_flight_pushed = 0
        self._cells: dict[tuple[str | None, str, int, str | None], _Cell | None] = {}  # None: not recorded
        self._durations: dict[str, Tally] = {}  # by route label
        self._upstreams: dict[tuple[str, str], Tally] = {}  # by route label and upstream
        self._remove_hook: Callable[[], None] | None = None if self._eager else before_collect(self.push)
        self._one_config = not configs.by_route  # no per-route override: no lookup per request
        self._enabled = configs.default.enabled  # a plain attribute: a pydantic model's is slower to read
        # The usual case in one flag: one config, enabled, one worker (reset by `stop`).
        self._plain = self._one_config and self._enabled and not self._eager
        # In it every call is in flight from on_request on, so on_request is the C method that puts
        # the call in this set (no Python frame per request) and on_complete discards it; otherwise
        # on_request marks `call.in_flight` and counts in `_in_flight`. The gauge is their sum.
        self._live: set[Call] = set()
        if self._plain:
            self.on_request = self._live.add  # type: ignore[method-assign,assignment]

    async def stop(self) -> None:
        # A reload stops this pipeline while its last calls may still complete: they write through.
        self.push()
        self._eager = True
        self._plain = False
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None

    def push(self) -> None:
        """Move every pending call and tally into the prometheus-client metrics."""
        for cell in self._cells.values():
            if cell is not None and cell.seen:
                self._fold(cell)
            if cell is not None and cell.count:
                cell.requests.inc(cell.count)
                cell.count = 0
        for tally in self._durations.values():
            tally.push()
        for tally in self._upstreams.values():
            tally.push()
        in_flight = self._in_flight + len(self._live)
        if in_flight != self._in_flight_pushed:
            HTTP_REQUESTS_IN_FLIGHT.inc(in_flight - self._in_flight_pushed)
            self._in_flight_pushed = in_flight

    def on_request(self, call: Call) -> None:
        # Not the usual case (see __init__): a call of an enabled route is marked and counted.
        if self._enabled if self._one_config else self.configs.for_call(call).enabled:
            call.in_flight = True
            self._in_flight += 1
            if self._eager:
                self.push()

    def on_complete(self, call: Call) -> None:
        if call.in_flight:
            call.in_flight = False
            self._in_flight -= 1
        else:
            self._live.discard(call)  # the usual case's on_request put it there (if it ran)
        route, method = call.route, call.method
        if route is None and method not in _METHODS:
            method = OTHER_METHOD
        key = (route, method, call.status, call.upstream)
        try:
            cell = self._cells[key]
        except KeyError:  # the first call of this key: no cost on the others (3.11's try is free)
            cell = self._cell(call, key)
        if cell is not None:
            seen = cell.seen  # two values per call, folded later (`_fold`)
            seen.append((call.finished or perf_counter()) - call.started)
            seen.append(call.upstream_s)
            if len(seen) >= _FOLD_AT:
                self._fold(cell)
        if self._eager:
            self.push()

    def _fold(self, cell: _Cell) -> None:
        """Count the calls a cell has seen and add their latencies to its tallies, in call order."""
        seen = cell.seen
        cell.count += len(seen) >> 1
        duration = cell.duration
        if duration is not None:
            duration.observe_many(seen[0::2])
        if cell.upstream_on:
            # A call that never reached the backend (0.0) is not an upstream observation.
            upstream_s = [s for s in seen[1::2] if s > 0.0]
            if upstream_s:
                (cell.upstream or self._upstream(cell)).observe_many(upstream_s)
        seen.clear()

    def _cell(self, call: Call, key: tuple[str | None, str, int, str | None]) -> _Cell | None:
        """The cell of `key`, made on the first call with it, from the settings of `call`'s route."""
        cfg = self.configs.default if self._one_config else self.configs.for_call(call)
        cell = None
        if cfg.enabled:
            route, method, status, upstream = key
            label = route or UNMATCHED
            duration = None
            if cfg.latency:
                duration = self._durations.get(label)
                if duration is None:
                    duration = self._durations[label] = Tally(HTTP_REQUEST_DURATION.labels(label))
            requests: Counter = HTTP_REQUESTS.labels(label, method, str(status))
            labels = (label, upstream) if cfg.upstream_latency and upstream is not None else None
            cell = _Cell(requests, duration, labels)
        self._cells[key] = cell
        return cell

    def _upstream(self, cell: _Cell) -> Tally:
        """The upstream latency tally of a cell, made on its first observation (a route whose
        calls never reach the backend shows no upstream series)."""
        labels = cell.upstream_on
        assert labels is not None
        tally = self._upstreams.get(labels)
        if tally is None:
            tally = self._upstreams[labels] = Tally(UPSTREAM_DURATION.labels(*labels))
        cell.upstream = tally
        return tally


class _Cell:
    """What the calls of one (route, method, status, upstream) add to: the request counter's child
    with the count not yet pushed, what the calls seen since the last fold took (elapsed and
    upstream seconds, two floats per call), the route's latency tally (None when latency is off)
    and the upstream latency tally (made on first use, when `upstream_on`: its labels)."""

    __slots__ = ("count", "duration", "requests", "seen", "upstream", "upstream_on")

    def __init__(self, requests: Counter, duration: Tally | None, upstream_on: tuple[str, str] | None) -> None:
        self.count = 0
        self.requests = requests
        self.seen: list[float] = []
        self.duration = duration
        self.upstream: Tally | None = None
        self.upstream_on = upstream_on


def build(configs: RouteConfigs[MetricsConfig]) -> Metrics:
    return Metrics(configs)
