"""Metrics at /metrics and W3C trace context through a real gateway to real backends.

Counters, histograms and gauges are read back from the admin listener's Prometheus text; every
assertion is on a difference, since the metrics are process-wide and other tests share them. Trace
context is checked where it lands: in the echo backend's metadata and in spans posted to an OTLP/HTTP
collector served here. Two workers are checked through `portcullis serve --workers 2`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_serving import serve_config

ECHO = "echo.v1.EchoService.Echo"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(http: aiohttp.ClientSession, admin: str) -> Samples:
    async with http.get(f"{admin}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await r.text())


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def metered(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(
        demo_config(demo_backends, policies=[{"name": "metrics"}, {"name": "tracing"}])
    )


# --- metrics ---------------------------------------------------------------------------------------


async def test_requests_are_counted_by_route_method_and_status(metered: Gateway) -> None:
    gw = metered
    before = await scrape(gw.http, gw.admin)
    for body in (
        {"message": "a"},
        {"message": "b"},
        {"message": "__sleep__:120"},
        {"message": "__error__:NOT_FOUND"},
    ):
        async with gw.http.post(f"{gw.url}/v1/echo", json=body) as r:
            await r.read()
    async with gw.http.get(f"{gw.url}/nowhere") as r:
        assert r.status == 404
    async with gw.http.put(f"{gw.url}/v1/echo") as r:
        assert r.status == 405
    after = await scrape(gw.http, gw.admin)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta("portcullis_http_requests_total", route=ECHO, method="POST", status="200") == 3
    assert delta("portcullis_http_requests_total", route=ECHO, method="POST", status="404") == 1
    assert delta("portcullis_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("portcullis_http_requests_total", route="unmatched", method="PUT", status="405") == 1
    assert delta("portcullis_http_request_duration_seconds_count", route=ECHO) == 4
    assert delta("portcullis_http_request_duration_seconds_sum", route=ECHO) >= 0.12
    assert delta("portcullis_http_request_duration_seconds_bucket", route=ECHO, le="+Inf") == 4
    assert delta("portcullis_upstream_duration_seconds_count", route=ECHO, upstream="echo") == 4
    upstream_s = delta("portcullis_upstream_duration_seconds_sum", route=ECHO, upstream="echo")
    assert 0.12 <= upstream_s <= delta("portcullis_http_request_duration_seconds_sum", route=ECHO)
    assert delta("portcullis_upstream_duration_seconds_count", route="unmatched", upstream="echo") == 0


async def test_streams_record_their_upstream_time(metered: Gateway) -> None:
    gw = metered
    route = "echo.v1.EchoService.StreamItems"
    before = await scrape(gw.http, gw.admin)
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "3", "prefix": "__sleep__:50"}) as r:
        assert r.status == 200, await r.text()
        assert len((await r.read()).splitlines()) == 3
    after = await scrape(gw.http, gw.admin)
    assert (
        get(after, "portcullis_upstream_duration_seconds_count", route=route, upstream="echo")
        - get(before, "portcullis_upstream_duration_seconds_count", route=route, upstream="echo")
        == 1
    )
    assert (
        get(after, "portcullis_upstream_duration_seconds_sum", route=route, upstream="echo")
        - get(before, "portcullis_upstream_duration_seconds_sum", route=route, upstream="echo")
        >= 0.15
    )


async def test_in_flight_requests_and_open_connections(metered: Gateway) -> None:
    gw = metered
    before = await scrape(gw.http, gw.admin)
    async with aiohttp.ClientSession() as client:  # its own keep-alive connection to the public listener
        slow = asyncio.create_task(client.post(f"{gw.url}/v1/echo", json={"message": "__sleep__:800"}))

        async def in_flight() -> bool:
            now = await scrape(gw.http, gw.admin)
            return (
                get(now, "portcullis_http_requests_in_flight")
                == get(before, "portcullis_http_requests_in_flight") + 1
            )

        await until(in_flight)
        response = await slow
        assert response.status == 200
        response.release()
        during = await scrape(gw.http, gw.admin)
        assert get(during, "portcullis_http_requests_in_flight") == get(
            before, "portcullis_http_requests_in_flight"
        )
        assert (
            get(during, "portcullis_http_connections_open")
            == get(before, "portcullis_http_connections_open") + 1
        )

    async def closed() -> bool:
        now = await scrape(gw.http, gw.admin)
        return get(now, "portcullis_http_connections_open") == get(before, "portcullis_http_connections_open")

    await until(closed)


async def test_upstream_health_is_read_at_scrape_time(demo_backends: Backends, metered: Gateway) -> None:
    gw = metered
    echo = demo_backends.echo.address

    def healthy(upstream: str, address: str) -> Callable[[], Any]:
        async def check() -> bool:
            return (
                get(
                    await scrape(gw.http, gw.admin),
                    "portcullis_upstream_healthy",
                    upstream=upstream,
                    address=address,
                )
                == 1.0
            )

        return check

    await until(healthy("echo", echo))
    await until(healthy("library", demo_backends.library.address))
    await demo_backends.echo.stop(0)

    async def down() -> bool:
        samples = await scrape(gw.http, gw.admin)
        return ("portcullis_upstream_healthy", (("address", echo), ("upstream", "echo"))) in samples and get(
            samples, "portcullis_upstream_healthy", upstream="echo", address=echo
        ) == 0.0

    await until(down)


# --- tracing ---------------------------------------------------------------------------------------


async def echo_metadata(
    gw: Gateway, headers: dict[str, str]
) -> tuple[dict[str, str], aiohttp.ClientResponse]:
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "__metadata__"}, headers=headers) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["labels"], r


async def test_backend_receives_the_trace_with_the_gateway_as_parent(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway
) -> None:
    log = tmp_path / "access.log"
    policies = [
        {"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}},
        {"name": "tracing", "config": {"response_header": True}},
    ]
    # traceparent is also in forward_headers: the client's copy must still not reach the backend.
    gw = await start_gateway(
        demo_config(
            demo_backends, policies=policies, metadata={"forward_headers": ["traceparent", "tracestate"]}
        )
    )
    labels, r = await echo_metadata(
        gw, {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE"}
    )
    version, trace_id, span_id, flags = labels["traceparent"].split("-")  # one value: no "," from a repeat
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert len(span_id) == 16 and span_id not in (PARENT, "0" * 16)
    assert labels["tracestate"] == "congo=t61rcWkgMzE"
    assert r.headers["X-Trace-Id"] == TRACE

    labels, r = await echo_metadata(
        gw, {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01", "tracestate": "a=b"}
    )
    new_trace = labels["traceparent"].split("-")[1]
    assert new_trace != TRACE.upper().lower() and new_trace == r.headers["X-Trace-Id"]
    assert "tracestate" not in labels

    async def logged() -> bool:
        return log.exists() and len(log.read_bytes().splitlines()) >= 2

    await until(logged)
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [line["trace_id"] for line in lines[:2]] == [TRACE, new_trace]


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[tuple[Any, Span]]]]:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span it is sent."""
    received: list[tuple[Any, Span]] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers["Content-Type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                received.extend((resource_spans.resource, span) for span in scope_spans.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces", received
    finally:
        await runner.cleanup()


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


async def test_spans_are_exported_over_otlp(
    demo_backends: Backends, start_gateway: StartGateway, collector: tuple[str, list[tuple[Any, Span]]]
) -> None:
    endpoint, received = collector
    tracing = {"otlp_endpoint": endpoint, "service_name": "gw-it", "export_interval_s": 0.05}
    gw = await start_gateway(demo_config(demo_backends, policies=[{"name": "tracing", "config": tracing}]))
    labels, _ = await echo_metadata(gw, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    hop = labels["traceparent"].split("-")[2]
    async with gw.http.post(
        f"{gw.url}/v1/echo",
        json={"message": "__error__:UNAVAILABLE"},
        headers={"traceparent": f"00-{'a' * 32}-{PARENT}-00"},
    ) as r:
        assert r.status == 503  # not sampled: no span
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "__error__:UNAVAILABLE"}) as r:
        assert r.status == 503  # a new trace, sampled (ratio 1): a root span

    async def both() -> bool:
        return len(received) >= 2

    await until(both)
    await asyncio.sleep(0.2)  # anything more would arrive by now
    assert len(received) == 2
    (resource, span), (_, root) = sorted(received, key=lambda item: item[1].start_time_unix_nano)
    assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == PARENT and span.span_id.hex() == hop
    assert span.name == "echo.v1.EchoService/Echo" and span.kind == Span.SPAN_KIND_SERVER
    assert attributes(span) == {
        "http.method": "POST",
        "http.status_code": 200,
        "http.route": ECHO,
        "rpc.system": "grpc",
        "rpc.service": "echo.v1.EchoService",
        "rpc.method": "Echo",
        "rpc.grpc.status_code": 0,
        "portcullis.request_id": span_request_id(span),
        "portcullis.upstream": "echo",
    }
    assert 0 < span.start_time_unix_nano < span.end_time_unix_nano <= time.time_ns()
    service = {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"]
    assert service == "gw-it"
    assert root.parent_span_id == b"" and root.trace_id.hex() != "a" * 32
    assert attributes(root)["rpc.grpc.status_code"] == 14 and attributes(root)["http.status_code"] == 503
    assert root.status.code == root.status.STATUS_CODE_ERROR


def span_request_id(span: Span) -> str:
    found = [kv.value.string_value for kv in span.attributes if kv.key == "portcullis.request_id"]
    assert len(found) == 1 and found[0]
    return found[0]


# --- several workers -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_two_workers_add_up_at_one_scrape(
    tmp_path: Path, demo_backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the supervisor makes its metrics directory here
    raw = demo_config(demo_backends, policies=[{"name": "metrics"}])
    served = await serve_config(tmp_path, raw, workers=2)
    try:
        [shared] = list(temp.glob("portcullis-metrics-*"))
        count = 80

        async def one(i: int) -> None:
            # A new connection per request, so SO_REUSEPORT spreads them over the workers.
            connector = aiohttp.TCPConnector(force_close=True)
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(f"{served.url}/v1/echo", json={"message": str(i)}) as r,
            ):
                assert r.status == 200

        for start in range(0, count, 20):
            await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        async with aiohttp.ClientSession() as http:
            samples = await scrape(http, served.admin)
            assert total(samples, "portcullis_http_requests_total", route=ECHO) == count
            assert (
                get(samples, "portcullis_http_requests_total", route=ECHO, method="POST", status="200")
                == count
            )
            assert get(samples, "portcullis_http_request_duration_seconds_count", route=ECHO) == count
            assert (
                get(samples, "portcullis_upstream_duration_seconds_count", route=ECHO, upstream="echo")
                == count
            )
            assert get(samples, "portcullis_http_requests_in_flight") == 0
            # Each worker recorded its own share, and the scrape added both up.
            shares = {
                pid: worker_requests(shared, pid, tmp_path / f"one-{pid}") for pid in served.workers.values()
            }
            assert all(share > 0 for share in shares.values()) and sum(shares.values()) == count, shares

            async with (
                aiohttp.ClientSession() as client,
                client.post(f"{served.url}/v1/echo", json={"message": "k"}),
            ):
                opened = await scrape(http, served.admin)
                assert get(opened, "portcullis_http_connections_open") == 1

            async def closed() -> bool:
                return get(await scrape(http, served.admin), "portcullis_http_connections_open") == 0

            await until(closed)
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 15) == 0
        assert not shared.exists(), "the supervisor removes its metrics directory at exit"
    finally:
        await stop(served.proc, list(served.workers.values()))


async def stop(proc: asyncio.subprocess.Process, workers: list[int]) -> None:
    """End a supervisor left running by a failure, and its workers (which hold its stdout open)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)  # forwarded to the workers
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            for pid in (proc.pid, *workers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await proc.wait()


def worker_requests(shared: Path, pid: int, alone: Path) -> float:
    """The requests one worker counted: its own counter file, read apart from the others'."""
    alone.mkdir()
    shutil.copy(shared / f"counter_{pid}.db", alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "portcullis_http_requests_total" and s.labels.get("route") == ECHO
    )
