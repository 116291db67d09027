"""The registry every gateway metric is declared in, and the tallies pushed into it just before a read.

`REGISTRY` is the process's own `CollectorRegistry` (`*_created` series off, as multiprocess mode
has none); `metrics_registry` declares every metric in it, at import. The hot path does not touch a
prometheus-client histogram per request: a `Tally` keeps a histogram child's observations as plain
ints and a float, and a hook given to `before_collect` pushes them into the child at the next
collection (a scrape of `/metrics`, a test's `get_sample_value`), so `Tally.observe` costs a bisect
and two adds, and the scrape does the rest. The metrics policy does less per request still: it
appends its two latencies to a list and folds many at once into the tallies (`policies/metrics.py`).
The hooks run from a collector registered first, before any metric, so they run before any metric
is read.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# No `*_created` series: multiprocess mode has none, so one worker and N workers expose the same names.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)  # what one worker exposes when it is alone


class _BeforeCollect(Collector):
    """Runs the hooks that push tallies kept as plain numbers into the metrics, before any read.

    Registered first, so that every collection of REGISTRY (a scrape, a test's `get_sample_value`)
    runs the hooks before it reads a metric: the hot path adds to an int, the scrape does the rest.
    """

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        for hook in tuple(self.hooks):
            hook()
        return ()


_BEFORE_COLLECT = _BeforeCollect()
REGISTRY.register(_BEFORE_COLLECT)


def before_collect(hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` before every collection of REGISTRY, until the returned function is called."""
    _BEFORE_COLLECT.hooks.append(hook)

    def remove() -> None:
        if hook in _BEFORE_COLLECT.hooks:
            _BEFORE_COLLECT.hooks.remove(hook)

    return remove


class Tally:
    """Observations of one histogram child not yet pushed: per-bucket counts (non-cumulative) and sum.

    For one worker and the event-loop thread only (no lock); `push` from a `before_collect` hook.

    `bisect_left` puts a value equal to a bound in that bound's bucket (`le` is inclusive), as
    prometheus-client's own `observe` does; the last slot is `+Inf`.
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)  # type: ignore[attr-defined]  # +Inf last
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: list[float]) -> None:
        """`observe(v)` for each of `values`, in order (the sum is added up as one by one); sorts `values`.

        A few take a bisect each; many are sorted, and bucket i (bounds[i-1] < v <= bounds[i], as
        bisect_left puts v) takes the values up to bounds[i] less those up to bounds[i-1], with one
        bisect per bound in C instead of one per value. The last bound is +Inf.
        """
        self.total = sum(values, self.total)  # Python 3.11 adds floats left to right, as `+=` would
        counts, bounds = self.counts, self.bounds
        if len(values) < 8:  # a few (what a write-through worker folds per call)
            for value in values:
                counts[bisect_left(bounds, value)] += 1
            return
        values.sort()
        below = 0
        for i, bound in enumerate(bounds):
            upto = bisect_right(values, bound)
            counts[i] += upto - below
            below = upto

    def push(self) -> None:
        # prometheus-client has no public "add n observations"; its child keeps one value per bucket
        # (`_buckets`, non-cumulative, +Inf last) and `_sum`. The unit and integration tests compare
        # scraped counts, sums and buckets with what was observed, so a change there fails them.
        if self.total or any(self.counts):
            buckets = self.child._buckets  # type: ignore[attr-defined]
            for i, n in enumerate(self.counts):
                if n:
                    buckets[i].inc(n)
                    self.counts[i] = 0
            self.child._sum.inc(self.total)  # type: ignore[attr-defined]
            self.total = 0.0
