"""Every Prometheus metric of the gateway, declared here, at import, in the order `/metrics` lists them.

Policies import the metric they write and increment it; nothing else declares one (Envoy's
`stats.h`). Names are `portcullis_<area>_<what>`. Label values must come from bounded sets (route
names, backend names, status codes, reason words), never from client input as such. The registry
they are declared in and the `Tally` that hot code observes into are `metrics_collection`; the
`/metrics` page, the multiprocess mode and `portcullis_upstream_healthy` (read at scrape time,
never stored) are `metrics_exposition`. Both are re-exported here, so a writer or the server
imports everything metric from this one module.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from gateway.metrics_collection import REGISTRY, Tally, before_collect
from gateway.metrics_exposition import (
    MULTIPROC_ENV,
    UPSTREAM_HEALTHY,
    HealthReporter,
    UpstreamHealth,
    metrics_handler,
    multiprocess_dir,
    render,
    worker_exited,
    worker_metrics_dir,
)

# What this module declares and what it re-exports, so that no importer needs the two modules beside it.
__all__ = (
    "AUTH_FAILURES", "CAPTURE_RECORDS", "FLEET_MESSAGES", "HTTP_CONNECTIONS_OPEN", "HTTP_REQUESTS",
    "HTTP_REQUESTS_IN_FLIGHT", "HTTP_REQUEST_DURATION", "INFERENCE_BATCH_SIZE",
    "INFERENCE_COMPUTE_DURATION", "INFERENCE_COUNT", "INFERENCE_EXEC_COUNT", "INFERENCE_PENDING",
    "INFERENCE_QUEUE_DURATION", "INFERENCE_REQUEST_DURATION", "INFERENCE_REQUEST_FAILURE",
    "INFERENCE_REQUEST_SUCCESS", "LATENCY_BUCKETS", "MULTIPROC_ENV", "RATELIMIT_REJECTIONS", "REGISTRY",
    "SCREENING_BATCH_SIZE", "SCREENING_DECISIONS", "SCREENING_DURATION", "SCREENING_FALLBACKS",
    "SCREENING_INFERENCE_DURATION", "SCREENING_MEMO_HITS", "SCREENING_MODEL_SWAPS", "SCREENING_SCORE",
    "SCREENING_SHADOW_DISAGREEMENTS", "STREAM_MESSAGES", "STREAM_MESSAGE_BYTES", "TRACING_SPANS_FAILED",
    "UPSTREAM_DURATION", "UPSTREAM_HEALTHY", "WS_CONNECTIONS_OPEN", "WS_MESSAGES", "WS_MESSAGE_BYTES",
    "HealthReporter", "Tally", "UpstreamHealth", "before_collect", "count_connections",
    "metrics_handler", "multiprocess_dir", "render", "worker_exited", "worker_metrics_dir",
)

# Seconds; finer than the client's default at the low end, where a gateway hop lives.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

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
# Triton's response-cache hit count, for the policy's repeat memo (gateway/policies/screening/kept_rows.py).
SCREENING_MEMO_HITS = Counter(
    "portcullis_screening_memo_hits_total",
    "Requests decided from the screening repeat memo (an exact repeat of a kept request, for the same "
    "models and route settings: no features and no onnxruntime run).",
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
