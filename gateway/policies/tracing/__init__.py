"""Tracing (`tracing`): W3C Trace Context in, a span id for the gateway hop, `traceparent` out.

`on_request` reads `traceparent` and `tracestate` (`context.py`); a header that does not parse
starts a new trace and its `tracestate` is dropped. The hop gets a new span id; the backend
receives, in its gRPC metadata, a `traceparent` naming that span as parent, and the `tracestate`;
the client's own two headers are withheld, so the backend never sees two. `call.trace_id` is set
for the access log, and `X-Trace-Id` answered when `response_header` is on. List this policy before
any that may reject, so that rejected calls have a trace id too.

Sampling: an incoming trace keeps its sampled flag; a new one is sampled when its trace id falls
under `sample_ratio` (OpenTelemetry's TraceIdRatioBased rule, so hops that use it agree). With an
`otlp_endpoint`, sampled hops are exported as spans (`otlp.py`, the optional `portcullis[otlp]`
extra) from `on_complete`; a request never waits on an export, and a failed one drops its spans
(counted in `portcullis_tracing_spans_failed_total`): tracing always fails open.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.call import Call
from gateway.policies import PolicyConfigError
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs
from gateway.policies.tracing.context import (
    TRACEPARENT,
    TRACESTATE,
    header_values,
    parse_traceparent,
    parse_tracestate,
)

TRACE_ID_HEADER = "X-Trace-Id"
_LOW_64 = (1 << 64) - 1
_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_GLOBAL_ONLY = ("otlp_endpoint", "service_name", "export_interval_s", "export_timeout_s")


class TracingConfig(PolicyConfig):
    enabled: bool = Field(True, description="Read, start and propagate trace context on these routes.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; None exports no spans."
    )
    service_name: str = Field("portcullis", min_length=1, description="service.name of the exported spans.")
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces sampled; an incoming trace keeps its sampled flag.",
    )
    response_header: bool = Field(False, description="Answer the trace id in an X-Trace-Id response header.")
    export_interval_s: float = Field(1.0, gt=0, le=60, description="How often queued spans are sent.")
    export_timeout_s: float = Field(
        10.0, gt=0, le=60, description="Deadline of one export; the spans of a failed export are dropped."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if not _otlp_installed():
            raise ValueError("exporting spans needs the OpenTelemetry SDK: pip install 'portcullis[otlp]'")
        return value


def _otlp_installed() -> bool:
    try:
        return importlib.util.find_spec(_OTLP_MODULE) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@dataclass(frozen=True, slots=True)
class Hop:
    """The gateway's span of one call, ids as lower-case hex: what an exporter needs at completion."""

    trace_id: str
    span_id: str
    parent_id: str | None  # None for a trace the gateway started
    tracestate: str | None


class SpanSink(Protocol):
    def record(self, hop: Hop, call: Call) -> None: ...

    def flush(self) -> None: ...

    def shutdown(self) -> None: ...


def _new_id(bits: int) -> int:
    while True:
        value = random.getrandbits(bits)  # as OpenTelemetry's RandomIdGenerator; zero is invalid
        if value:
            return value


class Tracing(BasePolicy):
    name = "tracing"

    def __init__(self, configs: RouteConfigs[TracingConfig], sink: SpanSink | None = None) -> None:
        self.configs = configs
        self.sink = sink  # made in start() from otlp_endpoint unless given
        self._hops: dict[int, Hop] = {}  # sampled calls in progress, by id(call), while spans are exported

    async def start(self) -> None:
        cfg = self.configs.default
        if self.sink is None and cfg.otlp_endpoint is not None:
            from gateway.policies.tracing.otlp import otlp_sink

            self.sink = otlp_sink(
                cfg.otlp_endpoint, cfg.service_name, cfg.export_interval_s, cfg.export_timeout_s
            )

    async def stop(self) -> None:
        if self.sink is not None:
            await asyncio.to_thread(self.sink.shutdown)  # sends what is queued: it blocks on the network

    async def on_request(self, call: Call) -> None:
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        headers = call.headers
        parent = None
        given = header_values(headers, TRACEPARENT)
        if given:
            call.hidden_headers.update((TRACEPARENT, TRACESTATE))  # replaced below, never forwarded as sent
            if len(given) == 1:  # two are invalid: the spec allows one
                parent = parse_traceparent(given[0])
        elif TRACESTATE in headers:
            call.hidden_headers.add(TRACESTATE)  # no tracestate without its traceparent
        span_id = f"{_new_id(64):016x}"
        if parent is not None:
            trace_id, parent_id, sampled = parent.trace_id, parent.parent_id, parent.sampled
            state = parse_tracestate(header_values(headers, TRACESTATE)) if TRACESTATE in headers else None
        else:
            number = _new_id(128)
            trace_id, parent_id, state = f"{number:032x}", None, None
            sampled = (number & _LOW_64) < round(cfg.sample_ratio * (1 << 64))
        call.trace_id = trace_id
        call.upstream_metadata.append((TRACEPARENT, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"))
        if state is not None:
            call.upstream_metadata.append((TRACESTATE, state))
        if cfg.response_header:
            call.response_headers[TRACE_ID_HEADER] = trace_id
        if sampled and self.sink is not None:
            self._hops[id(call)] = Hop(trace_id, span_id, parent_id, state)

    async def on_complete(self, call: Call) -> None:
        hop = self._hops.pop(id(call), None)
        if hop is not None and self.sink is not None:
            self.sink.record(hop, call)


def build(configs: RouteConfigs[TracingConfig]) -> Tracing:
    for route, cfg in configs.by_route.items():
        for key in _GLOBAL_ONLY:
            if getattr(cfg, key) != getattr(configs.default, key):
                raise PolicyConfigError(
                    f"tracing override for {route}: {key} is global; set it in the policies list only"
                )
    return Tracing(configs)
