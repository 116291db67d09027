"""The access line: its fields, their order and values, against the dict it was first written as (no sockets)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call import Call
from gateway.pipeline import Pipeline, settle
from gateway.policies.access_log import AccessLog, AccessLogConfig, _Lines
from gateway.policies.base import RouteConfigs
from translators.errors import GatewayError


def line(call: Call) -> dict[str, object]:
    """The fields of the line the access log writes for `call`, read back from its bytes."""
    out: list[bytes] = []
    _Lines(out.append).write(call)
    return orjson.loads(out[0])  # type: ignore[no-any-return]


def reference(call: Call, now: float) -> dict[str, object]:
    """The line as the first access log built it: a dict literal, int() and round half up by hand."""
    whole = int(call.started_unix)
    millis = int((call.started_unix - whole) * 1000)
    record: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z",
        "request_id": call.request_id,
        "route": call.route,
        "method": call.method,
        "path": call.path,
        "consumer": call.consumer,
        "client_ip": call.client_ip,
        "status": call.status,
        "grpc_code": call.grpc_code,
        "upstream": call.upstream,
        "latency_ms": int((now - call.started) * 1_000_000.0 + 0.5) / 1000,
        "upstream_ms": int(call.upstream_s * 1_000_000.0 + 0.5) / 1000,
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
        "trace_id": call.trace_id,
    }
    if call.error is not None:
        record["error"] = call.error.message
    record.update(call.attributes)
    return record


text = st.text(max_size=40)
maybe = st.none() | text


@settings(max_examples=300, deadline=None)
@given(
    unix=st.floats(0, 4_102_444_800, exclude_max=True),
    started=st.floats(1, 1e6),  # a perf_counter() reading: never 0.0, which means "not finished"
    elapsed=st.floats(0, 1e5),
    upstream_s=st.floats(0, 1e5),
    strings=st.tuples(text, text, text, text, maybe, maybe, maybe, maybe),
    numbers=st.tuples(st.integers(0, 599), st.integers(0, 2**40), st.integers(0, 2**40)),
    error=st.none() | text,
    attributes=st.dictionaries(st.sampled_from(["tier", "ratelimit", "screening_verdict", "ws_close"]),
                               st.none() | st.integers(-(2**63), 2**63 - 1) | text | st.dictionaries(text, st.booleans(), max_size=2)),
)
def test_a_line_has_the_fields_order_and_values_of_the_reference(
    unix: float, started: float, elapsed: float, upstream_s: float, strings: tuple[Any, ...],
    numbers: tuple[int, int, int], error: str | None, attributes: dict[str, Any],
) -> None:
    request_id, method, path, client_ip, route, consumer, grpc_code, trace_id = strings
    call = Call(request_id, method, path, client_ip, started=started, started_unix=unix, route=route,
                consumer=consumer, grpc_code=grpc_code, trace_id=trace_id, upstream="backend", upstream_s=upstream_s,
                attributes=dict(attributes))
    call.status, call.bytes_in, call.bytes_out = numbers
    if error is not None:
        call.error = GatewayError(5, error)  # type: ignore[arg-type]
    call.finished = started + elapsed
    expected = orjson.dumps(reference(call, call.finished))
    assert orjson.dumps(line(call)) == expected
    assert orjson.dumps(line(call)) == expected  # a second line in the same second: its cached form


@settings(max_examples=200, deadline=None)
@given(
    second=st.integers(0, 4_102_444_700),
    offsets=st.lists(
        st.floats(-1.5, 2.5) | st.sampled_from([0.0, 1e-9, 0.0005, 0.9995, 0.9999999, 1.0, -1e-9]), max_size=12
    ),
)
def test_timestamps_within_and_across_the_second_formatted_last(second: int, offsets: list[float]) -> None:
    # A line's second is formatted once and reused while the next lines fall in it: every line,
    # in any order around second boundaries, must still read what the reference formats.
    for offset in offsets:
        unix = second + offset
        if unix < 0:
            continue
        call = Call("r", "GET", "/x", "127.0.0.1", started=1.0, started_unix=unix)
        call.finished = 2.0
        assert line(call)["ts"] == reference(call, 2.0)["ts"], unix


async def test_the_pipeline_times_completion_once_for_every_observer(tmp_path: Any) -> None:
    log = AccessLog(RouteConfigs(AccessLogConfig(sink="file", path=tmp_path / "access.log")))
    pipeline = Pipeline((log,))
    await pipeline.start()
    call = Call("r", "GET", "/x", "127.0.0.1", started=time.perf_counter() - 0.25)
    await settle(pipeline.on_complete(call))
    assert call.finished > call.started
    await pipeline.stop()
    (record,) = [orjson.loads(raw) for raw in (tmp_path / "access.log").read_bytes().splitlines()]
    assert record["latency_ms"] == int((call.finished - call.started) * 1_000_000.0 + 0.5) / 1000
    assert record["latency_ms"] >= 250


async def test_every_line_and_the_configured_path_write_the_same_bytes(tmp_path: Any) -> None:
    # One config, unsampled: the hook is the line writer itself; a per-route override takes
    # on_complete's lookup first. The same calls make the same bytes either way.
    cfg = AccessLogConfig(sink="file", path=tmp_path / "a.log")
    every = AccessLog(RouteConfigs(cfg))
    routed = AccessLog(RouteConfigs(cfg.model_copy(update={"path": tmp_path / "b.log"}), {"other.Service": cfg}))
    assert every._every_line and not routed._every_line
    for policy in (every, routed):
        await policy.start()
    for i, attributes in enumerate([{}, {"api_key_id": "k1", "tier": "gold"}, {"ratelimit": {"rejected": "x"}}]):
        call = Call(f"r{i}", "GET", "/x", "127.0.0.1", started=1.0, started_unix=1_700_000_000.25 + i,
                    route="pkg.S.M", service="pkg.S", attributes=attributes)
        call.finished, call.status = 1.5, 200 + i
        if i == 2:
            call.error = GatewayError(8, "rate limit exceeded: x")  # type: ignore[arg-type]
        for policy in (every, routed):
            policy.on_complete(call)  # the hook the pipeline binds (call.finished stays as set)
    for policy in (every, routed):
        await policy.stop()
    written = (tmp_path / "a.log").read_bytes()
    assert written == (tmp_path / "b.log").read_bytes() and written.count(b"\n") == 3
    assert [orjson.loads(raw)["request_id"] for raw in written.splitlines()] == ["r0", "r1", "r2"]
