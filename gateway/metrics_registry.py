"""Every Prometheus metric of the gateway, declared here, and how they are exposed at `/metrics`.

Policies import the metric they write and increment it; nothing else declares one (Envoy's
`stats.h`). Names are `portcullis_<area>_<what>`. Label values must come from bounded sets (route
names, backend names, status codes, reason words), never from client input as such.

Several workers (`serve --workers N`) share one port; the supervisor gives them one fresh directory
in `PROMETHEUS_MULTIPROC_DIR` before spawning them (`worker_metrics_dir`), so prometheus-client
writes every value to per-process files there and worker 0, which alone serves the admin listener,
adds them up at scrape time (`MultiProcessCollector`). prometheus-client picks its mode once, when
it is first imported, from that variable: a worker process is spawned with it already set. With one
worker there is no directory and the process's own registry is exposed.

Upstream health is not stored: `portcullis_upstream_healthy` is read from the upstreams'
`health_report()` at scrape time, so it is the view of the worker that serves the scrape.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; finer than the client's default at the low end, where a gateway hop lives.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# No `*_created` series: multiprocess mode has none, so one worker and N workers expose the same names.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)  # what one worker exposes when it is alone
# Read once, as prometheus-client itself does on import: the mode cannot change in a running process.
_SHARED_DIR = os.environ.get(MULTIPROC_ENV) or None


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


# --- metrics: the policies and the server write these ---------------------------------------------
HTTP_REQUESTS = Counter(
    "portcullis_http_requests_total",
    "Requests answered, by route, HTTP method and status.",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "portcullis_http_request_duration_seconds",
    "Time from the request's arrival to its completion, by route.",
    ("route",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "portcullis_upstream_duration_seconds",
    "Time spent in the backend call (a whole stream for streams).",
    ("route", "upstream"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "portcullis_http_requests_in_flight",
    "Requests past routing and not yet completed.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
HTTP_CONNECTIONS_OPEN = Gauge(
    "portcullis_http_connections_open",
    "Open client connections on the public listener.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# WebSockets (gateway/handlers/websocket.py, multiplex.py, passthrough.py, through `sockets.SocketMeter`).
# route: the method's binding name, "websocket <path>" for passthrough, "mux <path>" for a multiplexed
# socket (connections only: its messages count under each stream's method); direction: "in" (client to
# backend) or "out" (backend to client). Sizes are the frame payloads as they cross the client socket.
WS_MESSAGES = Counter(
    "portcullis_ws_messages_total",
    "WebSocket messages passed on, by route and direction (in: from the client, out: to it).",
    ("route", "direction"),
    registry=REGISTRY,
)
WS_MESSAGE_BYTES = Histogram(
    "portcullis_ws_message_bytes",
    "Sizes of the WebSocket messages passed on, in bytes, by route and direction.",
    ("route", "direction"),
    buckets=(16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
    registry=REGISTRY,
)
WS_CONNECTIONS_OPEN = Gauge(
    "portcullis_ws_connections_open",
    "WebSocket sessions open, from the upgrade request to the close, by route.",
    ("route",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# Streams over HTTP (gateway/handlers/http_stream.py, grpc_web.py, through `http_stream.StreamMeter`).
# route: the method's binding name; format: ndjson, json_array or sse (server streams), ndjson or
# json_array (client streams' bodies), grpc_web or grpc_web_text; direction: "in" (request messages)
# or "out" (response messages). Sizes: each message as it crosses the client connection (its chunk,
# event or gRPC-Web frame; a request message's JSON text).
STREAM_MESSAGES = Counter(
    "portcullis_stream_messages_total",
    "Stream messages passed on over HTTP, by route, format and direction (in: from the client, out: to it).",
    ("route", "format", "direction"),
    registry=REGISTRY,
)
STREAM_MESSAGE_BYTES = Histogram(
    "portcullis_stream_message_bytes",
    "Sizes of the stream messages passed on over HTTP, in bytes, by route, format and direction.",
    ("route", "format", "direction"),
    buckets=(16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
    registry=REGISTRY,
)
# route: call.route, or "unmatched"; limit: the limit's configured name.
RATELIMIT_REJECTIONS = Counter(
    "portcullis_ratelimit_rejections_total",
    "Requests refused by a rate limit, by route and limit name.",
    ("route", "limit"),
    registry=REGISTRY,
)
# reason: one word from a fixed set the auth policy defines (e.g. missing, invalid, expired, forbidden).
AUTH_FAILURES = Counter(
    "portcullis_auth_failures_total",
    "Requests refused by authentication or authorization, by reason.",
    ("reason",),
    registry=REGISTRY,
)
TRACING_SPANS_FAILED = Counter(
    "portcullis_tracing_spans_failed_total",
    "Spans the OTLP exporter failed to deliver, after its own retries; they are dropped.",
    registry=REGISTRY,
)
# Screening (gateway/policies/screening/). verdict: allow, flag (monitor mode, over the threshold),
# block, skip (mode off or nothing to screen), error (the model failed; see fallbacks).
SCREENING_DECISIONS = Counter(
    "portcullis_screening_decisions_total",
    "Screening decisions, by route and verdict.",
    ("route", "verdict"),
    registry=REGISTRY,
)
SCREENING_SCORE = Histogram(
    "portcullis_screening_score",
    "Screening scores of requests (the highest row of a request), by route.",
    ("route",),
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    registry=REGISTRY,
)
# The policy's own latency per screened request (or WebSocket message): record, features, scoring and
# verdict, a wait for a micro-batch included; what `bench/screening.py` reads for the 1 ms p99 target.
SCREENING_DURATION = Histogram(
    "portcullis_screening_duration_seconds",
    "Time the screening policy spent on one request or message (features, scoring, verdict), by route.",
    ("route",),
    buckets=(0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)
SCREENING_INFERENCE_DURATION = Histogram(
    "portcullis_screening_inference_duration_seconds",
    "Time of one onnxruntime run (one batch).",
    buckets=(0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)
SCREENING_BATCH_SIZE = Histogram(
    "portcullis_screening_batch_size",
    "Feature rows per onnxruntime run.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
# reason: error (inference failed), timeout, unavailable (no model loaded).
SCREENING_FALLBACKS = Counter(
    "portcullis_screening_fallbacks_total",
    "Requests the model could not score, let through (fail_open) or refused, by reason.",
    ("reason", "outcome"),
    registry=REGISTRY,
)
SCREENING_SHADOW_DISAGREEMENTS = Counter(
    "portcullis_screening_shadow_disagreements_total",
    "Requests on which the shadow model's verdict differs from the active model's, by route.",
    ("route",),
    registry=REGISTRY,
)
SCREENING_MODEL_SWAPS = Counter(
    "portcullis_screening_model_swaps_total",
    "Model activations and rollbacks that took effect; refused loads, by outcome.",
    ("outcome",),
    registry=REGISTRY,
)
# Fleet model changes (gateway/fleet.py). action: activate, rollback, shadow. outcome: published,
# publish_failed (this gateway's change), applied, refused (checksum, missing or bad model), unchanged.
FLEET_MESSAGES = Counter(
    "portcullis_fleet_messages_total",
    "Model changes published to the fleet or received from it, by action and outcome.",
    ("action", "outcome"),
    registry=REGISTRY,
)
# Traffic capture for retraining (gateway/policies/capture.py). outcome: written, dropped (buffer
# full), failed (the file could not be written).
CAPTURE_RECORDS = Counter(
    "portcullis_capture_records_total",
    "Sampled requests of the traffic capture, by outcome.",
    ("outcome",),
    registry=REGISTRY,
)
# Model inference (gateway/inference.py), Triton's metrics under our names. model, version: as served
# from the repository (operator-controlled folder names); a request for a model that does not resolve
# counts under model "unknown", version "". reason: a word from the serving errors (invalid_input,
# not_found, not_ready, queue_full, inference_failed, cancelled: the client went away). Requests a
# policy refused never reach a model: they count in portcullis_http_requests_total like any route's.
INFERENCE_REQUEST_SUCCESS = Counter(
    "portcullis_inference_request_success_total",
    "Inference requests answered with outputs, by model and version.",
    ("model", "version"),
    registry=REGISTRY,
)
INFERENCE_REQUEST_FAILURE = Counter(
    "portcullis_inference_request_failure_total",
    "Inference requests that failed, by model, version and reason.",
    ("model", "version", "reason"),
    registry=REGISTRY,
)
INFERENCE_COUNT = Counter(
    "portcullis_inference_count_total",
    "Rows inferred (a request of batch size 4 counts 4), by model and version.",
    ("model", "version"),
    registry=REGISTRY,
)
INFERENCE_EXEC_COUNT = Counter(
    "portcullis_inference_exec_count_total",
    "onnxruntime runs (batches), by model and version; count / exec_count is the mean batch.",
    ("model", "version"),
    registry=REGISTRY,
)
INFERENCE_REQUEST_DURATION = Histogram(
    "portcullis_inference_request_duration_seconds",
    "Inference requests from arrival to response, by model and version.",
    ("model", "version"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
INFERENCE_QUEUE_DURATION = Histogram(
    "portcullis_inference_queue_duration_seconds",
    "Time a request waited in its model's queue before its run started, by model and version.",
    ("model", "version"),
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
INFERENCE_COMPUTE_DURATION = Histogram(
    "portcullis_inference_compute_duration_seconds",
    "Time of one onnxruntime run (one batch), by model and version.",
    ("model", "version"),
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
INFERENCE_BATCH_SIZE = Histogram(
    "portcullis_inference_batch_size",
    "Rows per onnxruntime run, by model and version.",
    ("model", "version"),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
INFERENCE_PENDING = Gauge(
    "portcullis_inference_pending_requests",
    "Inference requests queued for a run, summed over models, sampled when a run starts.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
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


def count_connections(runner: web.AppRunner) -> None:
    """Keep `portcullis_http_connections_open` equal to the open connections of `runner`'s server.

    aiohttp has no connection signal, but its low-level `Server` is told of every connection made
    and lost by the protocol; the two hooks are wrapped on this one instance, after `setup()`.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("count_connections needs a runner that was set up")
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: web.RequestHandler, transport: object) -> None:
        made(handler, transport)  # type: ignore[arg-type]
        HTTP_CONNECTIONS_OPEN.inc()

    def connection_lost(handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        HTTP_CONNECTIONS_OPEN.dec()

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


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
