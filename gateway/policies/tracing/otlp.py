"""Span export over OTLP/HTTP through the OpenTelemetry SDK (the optional `portcullis[otlp]` extra).

Imported only when a tracing policy has an `otlp_endpoint`. `OtelSink.record` makes the span of one
finished hop with the very ids already sent downstream: the SDK draws span ids itself, and its
`IdGenerator` is its extension point, so `GivenIds` hands out the ids of the span being made, set
just before `start_span` on the event loop, the only thread that makes spans. The sampler is
ALWAYS_ON: the tracing policy took the sampling decision in `on_request`. Spans queue to a
`BatchSpanProcessor`, whose own thread exports them; a failed export drops its spans and counts them
in `portcullis_tracing_spans_failed_total`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from gateway.call import Call
from gateway.metrics_registry import TRACING_SPANS_FAILED
from gateway.policies.tracing import Hop

_GRPC_CODES = {code.name: code.value[0] for code in grpc.StatusCode}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class GivenIds(IdGenerator):
    """The ids of the next span, decided before it is made."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class CountingExporter(SpanExporter):
    """Counts the spans of failed exports, which the SDK only logs."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            TRACING_SPANS_FAILED.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class OtelSink:
    """One tracing policy's tracer and batch processor; `shutdown` sends what is queued."""

    def __init__(
        self, exporter: SpanExporter, service_name: str, interval_s: float, timeout_s: float
    ) -> None:
        self._ids = GivenIds()
        self._processor = BatchSpanProcessor(
            CountingExporter(exporter),
            schedule_delay_millis=interval_s * 1000,
            export_timeout_millis=timeout_s * 1000,
        )
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ALWAYS_ON,
            id_generator=self._ids,
            shutdown_on_exit=False,
        )
        provider.add_span_processor(self._processor)
        self._tracer = provider.get_tracer("portcullis.gateway")

    def record(self, hop: Hop, call: Call) -> None:
        trace_id = int(hop.trace_id, 16)
        self._ids.trace_id, self._ids.span_id = trace_id, int(hop.span_id, 16)
        context = Context()
        if hop.parent_id is not None:
            state = TraceState.from_header([hop.tracestate]) if hop.tracestate else None
            parent = SpanContext(
                trace_id, int(hop.parent_id, 16), is_remote=True, trace_flags=_SAMPLED, trace_state=state
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        start = int(call.started_unix * 1e9)
        span = self._tracer.start_span(
            span_name(call),
            context=context,
            kind=SpanKind.SERVER,
            attributes=span_attributes(call),
            start_time=start,
        )
        if call.status >= 500:  # a server span is an error for 5xx only; a 4xx is the client's
            span.set_status(Status(StatusCode.ERROR, call.error.message if call.error else None))
        span.end(end_time=start + int(call.elapsed_s * 1e9))

    def flush(self) -> None:
        self._processor.force_flush()

    def shutdown(self) -> None:
        self._processor.shutdown()


def otlp_sink(endpoint: str, service_name: str, interval_s: float, timeout_s: float) -> OtelSink:
    return OtelSink(
        OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s), service_name, interval_s, timeout_s
    )


def span_name(call: Call) -> str:
    """`pkg.Service/Method` (OpenTelemetry's RPC span name), or the HTTP method when no route matched."""
    method = call.method_name
    if method is None:
        return call.method
    service, _, rpc = method.rpartition(".")
    return f"{service}/{rpc}"


def span_attributes(call: Call) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.method": call.method,
        "http.status_code": call.status,
        "rpc.system": "grpc",
        "portcullis.request_id": call.request_id,
    }
    if call.route is not None:
        attributes["http.route"] = call.route  # the binding's name: the Call does not carry its template
    if call.service is not None:
        attributes["rpc.service"] = call.service
    method = call.method_name
    if method is not None:
        attributes["rpc.method"] = method.rpartition(".")[2]
    if call.grpc_code in _GRPC_CODES:
        attributes["rpc.grpc.status_code"] = _GRPC_CODES[call.grpc_code]
    if call.upstream is not None:
        attributes["portcullis.upstream"] = call.upstream
    return attributes
