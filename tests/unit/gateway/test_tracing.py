"""Tracing policy: Trace Context parsing, propagation into metadata, sampling, span export; no sockets."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.metrics_registry import REGISTRY
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.base import RouteConfigs
from gateway.policies.tracing import Hop, Tracing, TracingConfig
from gateway.policies.tracing.context import parse_traceparent, parse_tracestate
from gateway.policies.tracing.otlp import OtelSink
from translators.errors import GatewayError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def make_call(headers: Any = None, **fields: Any) -> Call:
    call = Call(
        request_id="req-1", method="POST", path="/v1/echo", client_ip="127.0.0.1", headers=headers or {}
    )
    call.route, call.service, call.upstream = "echo.v1.EchoService.Echo", "echo.v1.EchoService", "echo"
    for key, value in fields.items():
        setattr(call, key, value)
    return call


def sent(call: Call, key: str) -> list[str | bytes]:
    return [v for k, v in call.upstream_metadata if k == key]


class Recorder:
    def __init__(self) -> None:
        self.recorded: list[tuple[Hop, Call]] = []

    def record(self, hop: Hop, call: Call) -> None:
        self.recorded.append((hop, call))

    def flush(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


def policy(sink: Recorder | None = None, **settings: Any) -> Tracing:
    return Tracing(RouteConfigs(TracingConfig(**settings)), sink)


# --- parsing ---------------------------------------------------------------------------------------


def test_valid_traceparent() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None
    assert (parent.trace_id, parent.parent_id, parent.flags, parent.sampled) == (TRACE, PARENT, 1, True)
    unsampled = parse_traceparent(f"00-{TRACE}-{PARENT}-00")
    assert unsampled is not None and not unsampled.sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"00-{TRACE.upper()}-{PARENT}-01",  # hex must be lower case
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE}-{PARENT}-0g",
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}01",
        f"00_{TRACE}_{PARENT}_01",
        f"0-{TRACE}-{PARENT}-01",
        f"zz-{TRACE}-{PARENT}-01",
        f" 00-{TRACE}-{PARENT}-01",
    ],
)
def test_invalid_traceparent(value: str) -> None:
    assert parse_traceparent(value) is None


def test_later_version_is_read_by_its_version_00_prefix() -> None:
    parent = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-will-bring")
    assert parent is not None and parent.trace_id == TRACE and parent.sampled
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01") is not None
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01x") is None  # more must start with "-"


def test_tracestate_is_combined_and_validated() -> None:
    assert (
        parse_tracestate(["congo=t61rcWkgMzE", " rojo=00f067aa0ba902b7 ,,"])
        == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert parse_tracestate(["tenant@vendor=a b"]) == "tenant@vendor=a b"
    assert parse_tracestate([]) is None
    assert parse_tracestate([" , "]) is None
    assert parse_tracestate(["Congo=x"]) is None  # keys are lower case
    assert parse_tracestate(["congo"]) is None
    assert parse_tracestate(["congo=a,congo=b"]) is None  # a key appears once
    assert parse_tracestate(["congo=a=b"]) is None
    assert parse_tracestate(["congo=caf\u00e9"]) is None  # printable ASCII only
    assert parse_tracestate(["congo=" + "x" * 257]) is None
    assert parse_tracestate([",".join(f"k{i}=v" for i in range(32))]) is not None
    assert parse_tracestate([",".join(f"k{i}=v" for i in range(33))]) is None


# --- propagation -----------------------------------------------------------------------------------


async def test_incoming_trace_is_continued_with_a_new_span() -> None:
    call = make_call({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    await policy().on_request(call)
    assert call.trace_id == TRACE
    [traceparent] = sent(call, "traceparent")
    assert isinstance(traceparent, str)
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert len(span_id) == 16 and span_id != PARENT and int(span_id, 16) != 0
    assert sent(call, "tracestate") == ["congo=t61rcWkgMzE"]
    assert {"traceparent", "tracestate"} <= call.hidden_headers  # the client's copies are not forwarded
    assert "X-Trace-Id" not in call.response_headers


async def test_each_hop_gets_its_own_span_id() -> None:
    tracing = policy()
    spans = set()
    for _ in range(50):
        call = make_call({"traceparent": VALID})
        await tracing.on_request(call)
        spans.add(str(sent(call, "traceparent")[0]).split("-")[2])
    assert len(spans) == 50


async def test_invalid_traceparent_starts_a_new_trace_and_drops_tracestate() -> None:
    call = make_call({"traceparent": f"00-{'0' * 32}-{PARENT}-01", "tracestate": "congo=x"})
    await policy().on_request(call)
    assert call.trace_id is not None and call.trace_id != "0" * 32 and len(call.trace_id) == 32
    assert parse_traceparent(str(sent(call, "traceparent")[0])) is not None
    assert sent(call, "tracestate") == []
    assert {"traceparent", "tracestate"} <= call.hidden_headers


async def test_two_traceparent_headers_start_a_new_trace() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("traceparent", VALID), ("traceparent", f"00-{TRACE}-{'1' * 16}-01")])
    )
    call = make_call(headers)
    await policy().on_request(call)
    assert call.trace_id != TRACE


async def test_tracestate_without_traceparent_is_withheld() -> None:
    call = make_call({"tracestate": "congo=x"})
    await policy().on_request(call)
    assert sent(call, "tracestate") == [] and "tracestate" in call.hidden_headers
    assert call.trace_id is not None


async def test_new_traces_follow_sample_ratio_and_incoming_ones_keep_their_flag() -> None:
    sink = Recorder()
    never, always = policy(sink, sample_ratio=0.0), policy(sink, sample_ratio=1.0)
    for tracing, flag in ((never, "00"), (always, "01")):
        call = make_call()
        await tracing.on_request(call)
        assert str(sent(call, "traceparent")[0]).endswith(f"-{flag}")
        await tracing.on_complete(call)
    assert len(sink.recorded) == 1  # only the sampled one is exported
    unsampled_in = make_call({"traceparent": f"00-{TRACE}-{PARENT}-00"})
    await always.on_request(unsampled_in)
    assert str(sent(unsampled_in, "traceparent")[0]).endswith("-00")
    await always.on_complete(unsampled_in)
    sampled_in = make_call({"traceparent": VALID})
    await never.on_request(sampled_in)
    assert str(sent(sampled_in, "traceparent")[0]).endswith("-01")
    await never.on_complete(sampled_in)
    assert len(sink.recorded) == 2 and sink.recorded[1][1] is sampled_in


async def test_sample_ratio_samples_about_that_share() -> None:
    tracing = policy(sample_ratio=0.25)
    sampled = 0
    for _ in range(4000):
        call = make_call()
        await tracing.on_request(call)
        sampled += str(sent(call, "traceparent")[0]).endswith("-01")
    assert 800 < sampled < 1200


async def test_response_header_and_disabled_routes() -> None:
    call = make_call({"traceparent": VALID})
    await policy(response_header=True).on_request(call)
    assert call.response_headers["X-Trace-Id"] == TRACE
    configs = RouteConfigs(TracingConfig(), {"echo.v1.EchoService": TracingConfig(enabled=False)})
    off = make_call({"traceparent": VALID})
    await Tracing(configs).on_request(off)
    assert off.trace_id is None and off.upstream_metadata == [] and not off.hidden_headers


async def test_hop_is_released_when_the_call_completes() -> None:
    sink = Recorder()
    tracing = policy(sink)
    call = make_call({"traceparent": VALID})
    await tracing.on_request(call)
    await tracing.on_complete(call)
    await tracing.on_complete(call)  # a second completion records nothing more
    assert len(sink.recorded) == 1 and not tracing._hops
    hop = sink.recorded[0][0]
    assert hop.parent_id == PARENT and hop.trace_id == TRACE
    assert sent(call, "traceparent") == [f"00-{TRACE}-{hop.span_id}-01"]


# --- spans -----------------------------------------------------------------------------------------


async def test_span_carries_the_propagated_ids_and_call_attributes() -> None:
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter, "gw-test", interval_s=60, timeout_s=5)
    tracing = Tracing(RouteConfigs(TracingConfig()), sink)
    call = make_call({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    await tracing.on_request(call)
    call.status, call.grpc_code = 404, "NOT_FOUND"
    await tracing.on_complete(call)
    root = make_call()
    await tracing.on_request(root)
    root.status, root.grpc_code = 503, "UNAVAILABLE"
    root.error = GatewayError(grpc.StatusCode.UNAVAILABLE, "backend echo unavailable")
    await tracing.on_complete(root)
    sink.flush()
    first, second = exporter.get_finished_spans()
    span_id = str(sent(call, "traceparent")[0]).split("-")[2]
    assert first.context is not None and first.parent is not None
    assert first.context.trace_id == int(TRACE, 16) and first.context.span_id == int(span_id, 16)
    assert first.parent.span_id == int(PARENT, 16) and first.parent.is_remote
    assert first.context.trace_state.get("congo") == "t61rcWkgMzE"
    assert first.name == "echo.v1.EchoService/Echo" and first.kind is SpanKind.SERVER
    assert dict(first.attributes or {}) == {
        "http.method": "POST",
        "http.status_code": 404,
        "http.route": "echo.v1.EchoService.Echo",
        "rpc.system": "grpc",
        "rpc.service": "echo.v1.EchoService",
        "rpc.method": "Echo",
        "rpc.grpc.status_code": 5,
        "portcullis.request_id": "req-1",
        "portcullis.upstream": "echo",
    }
    assert first.status.status_code is StatusCode.UNSET  # a 4xx is the client's error, not the server's
    assert first.start_time == int(call.started_unix * 1e9)
    assert first.end_time is not None and first.end_time >= first.start_time
    assert first.resource.attributes["service.name"] == "gw-test"
    assert second.parent is None and second.context is not None
    assert f"{second.context.trace_id:032x}" == root.trace_id
    assert (
        second.status.status_code is StatusCode.ERROR
        and second.status.description == "backend echo unavailable"
    )
    sink.shutdown()


async def test_failed_exports_are_counted() -> None:
    class Failing(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.FAILURE

    before = REGISTRY.get_sample_value("portcullis_tracing_spans_failed_total") or 0.0
    sink = OtelSink(Failing(), "gw-test", interval_s=60, timeout_s=5)
    tracing = Tracing(RouteConfigs(TracingConfig()), sink)
    for _ in range(3):
        call = make_call()
        await tracing.on_request(call)
        await tracing.on_complete(call)
    sink.flush()
    assert REGISTRY.get_sample_value("portcullis_tracing_spans_failed_total") == before + 3
    sink.shutdown()


# --- config ----------------------------------------------------------------------------------------


def gateway_config(policies: list[dict[str, Any]], overrides: dict[str, Any] | None = None) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
            "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
            "services": {"echo.v1.EchoService": {"backend": "echo", "policies": overrides or {}}},
            "policies": policies,
        }
    )


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"bogus": 1}, "policies.0.config.bogus"),
        ({"sample_ratio": 1.5}, "policies.0.config.sample_ratio"),
        ({"otlp_endpoint": "collector:4318"}, "policies.0.config.otlp_endpoint"),
        ({"service_name": ""}, "policies.0.config.service_name"),
    ],
)
def test_bad_config_names_the_key(config: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyConfigError, match=where.replace(".", r"\.")):
        build_pipeline(gateway_config([{"name": "tracing", "config": config}]))


def test_global_settings_cannot_be_overridden_per_service() -> None:
    config = gateway_config(
        [{"name": "tracing", "config": {}}],
        {"tracing": {"otlp_endpoint": "http://127.0.0.1:4318/v1/traces"}},
    )
    with pytest.raises(PolicyConfigError, match="otlp_endpoint is global"):
        build_pipeline(config)
    allowed = gateway_config([{"name": "tracing", "config": {}}], {"tracing": {"sample_ratio": 0.1}})
    assert build_pipeline(allowed).policies[0].name == "tracing"
