"""How the gateway's metrics leave the process: the `/metrics` page and the multiprocess mode behind it.

Several workers (`serve --workers N`) share one port; the supervisor gives them one fresh directory
in `PROMETHEUS_MULTIPROC_DIR` before spawning them (`worker_metrics_dir`), so prometheus-client
writes every value to per-process files there and worker 0, which alone serves the admin listener,
adds them up at scrape time (`MultiProcessCollector`). prometheus-client picks its mode once, when
it is first imported, from that variable: a worker process is spawned with it already set. With one
worker there is no directory and the process's own registry is exposed. Upstream health is not
stored: `portcullis_upstream_healthy` is read from the upstreams' `health_report()` at scrape time,
so it is the view of the worker that serves the scrape. None of this is on the request path: the
admin listener's `GET /metrics` calls `render`, the supervisor the directory functions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from gateway.metrics_collection import REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read once, as prometheus-client itself does on import: the mode cannot change in a running process.
_SHARED_DIR = os.environ.get(MULTIPROC_ENV) or None
# Collected at scrape time from each upstream's health_report(); never stored.
UPSTREAM_HEALTHY = "portcullis_upstream_healthy"


class HealthReporter(Protocol):
    def health_report(self) -> Mapping[str, bool]: ...


class UpstreamHealth(Collector):
    """`portcullis_upstream_healthy{upstream,address}`: 1 while the address passes its health check."""

    def __init__(self, upstreams: Mapping[str, HealthReporter]) -> None:
        self.upstreams = upstreams

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            UPSTREAM_HEALTHY,
            "1 when the backend address passes its health check, else 0.",
            labels=("upstream", "address"),
        )
        for name, upstream in sorted(self.upstreams.items()):
            for address, ok in sorted(upstream.health_report().items()):
                family.add_metric((name, address), 1.0 if ok else 0.0)
        yield family


def multiprocess_dir() -> str | None:
    """The shared directory when prometheus-client runs in multiprocess mode, else None."""
    return _SHARED_DIR


def render(upstreams: Mapping[str, HealthReporter]) -> bytes:
    """The Prometheus text exposition of every metric, all workers added up when there are several."""
    registry = CollectorRegistry()  # per scrape: it holds no state and costs nothing to make
    shared = multiprocess_dir()
    if shared is not None:
        multiprocess.MultiProcessCollector(registry, path=shared)
    else:
        registry.register(REGISTRY)
    registry.register(UpstreamHealth(upstreams))
    return generate_latest(registry)


def metrics_handler(
    upstreams: Callable[[], Mapping[str, HealthReporter]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`GET /metrics` for the admin app; `upstreams` gives the ones serving now (a reload swaps them)."""

    async def serve_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=render(upstreams()), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    return serve_metrics


@contextmanager
def worker_metrics_dir() -> Iterator[Path]:
    """A fresh multiprocess directory in the environment of the workers spawned inside; removed after.

    Always a new one: values left by an earlier run would be added to this run's.
    """
    path = Path(tempfile.mkdtemp(prefix="portcullis-metrics-"))
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int | None, path: Path) -> None:
    """Drop a dead worker's live gauges (in flight, connections); its counters stay in the totals."""
    if pid is not None:
        multiprocess.mark_process_dead(pid, str(path))
