"""The demo backends over real sockets: each RPC, each test hook, health, reflection and shutdown.

Every test starts its own backend on an ephemeral 127.0.0.1 port and talks to it with a grpc.aio client,
as the gateway will; fixtures stop the servers. The library's CRUD and error details are in
`test_library_backend.py`.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from echo.v1 import echo_pb2, echo_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import echo_backend, library_backend
from tests.support.backends import running_backends
from tests.support.rich_status import status_from_metadata
from tests.support.serving import RunningServer

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = {"echo": echo_backend, "library": library_backend}


@pytest.fixture
async def echo() -> AsyncIterator[RunningServer]:
    running = await echo_backend.serve()
    yield running
    await running.stop(None)


@pytest.fixture
async def echo_channel(echo: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(echo.address) as channel:
        yield channel


@pytest.fixture
def stub(echo_channel: grpc.aio.Channel) -> echo_pb2_grpc.EchoServiceStub:
    return echo_pb2_grpc.EchoServiceStub(echo_channel)


# The contract behaviour, as the Go peer serves it.


async def test_echo_repeats_message_and_echoes_labels(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    before = time.time_ns()
    response = await stub.Echo(echo_pb2.EchoRequest(message="ab", repeat=3, labels={"k": "v"}))
    assert response.message == "ababab"
    assert dict(response.labels) == {"k": "v"}
    assert before <= response.received_at_unix_nanos <= time.time_ns()


@pytest.mark.parametrize("repeat", [0, 1, -5])
async def test_echo_sends_message_once_when_repeat_below_two(
    stub: echo_pb2_grpc.EchoServiceStub, repeat: int
) -> None:
    response = await stub.Echo(echo_pb2.EchoRequest(message="hello world", repeat=repeat))
    assert response.message == "hello world"


async def test_get_item(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    item = await stub.GetItem(echo_pb2.GetItemRequest(id="item-1"))
    assert item == echo_pb2.Item(id="item-1", name="item item-1", price=9.99, tags=["a", "b"])


@pytest.mark.parametrize(
    ("count", "prefix", "ids"),
    [(3, "", ["item-0", "item-1", "item-2"]), (2, "book-", ["book-0", "book-1"]), (0, "", []), (-1, "", [])],
)
async def test_stream_items(
    stub: echo_pb2_grpc.EchoServiceStub, count: int, prefix: str, ids: list[str]
) -> None:
    items = [item async for item in stub.StreamItems(echo_pb2.StreamItemsRequest(count=count, prefix=prefix))]
    assert [item.id for item in items] == ids
    assert all(item.name == "item " + item.id and item.tags == ["a", "b"] for item in items)


async def test_chat_answers_each_message_as_echo_does(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    call = stub.Chat()
    for i in range(3):
        await call.write(echo_pb2.EchoRequest(message=f"m{i}", repeat=2, labels={"i": str(i)}))
        reply = await call.read()
        assert (reply.message, dict(reply.labels)) == (f"m{i}m{i}", {"i": str(i)})
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


# Test hooks.


async def test_error_hook_aborts_with_the_named_code_and_no_details(
    stub: echo_pb2_grpc.EchoServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Echo(echo_pb2.EchoRequest(message="__error__:PERMISSION_DENIED"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_from_metadata(raised.value.trailing_metadata()) is None

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetItem(echo_pb2.GetItemRequest(id="__error__:NOT_FOUND"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("message", ["__error__:OK", "__error__:NOPE", "__sleep__:soon", "__sleep__:-1"])
async def test_malformed_hook_is_invalid_argument(stub: echo_pb2_grpc.EchoServiceStub, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Echo(echo_pb2.EchoRequest(message=message))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sleep_hook_delays_the_answer(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    started = time.monotonic()
    response = await stub.Echo(echo_pb2.EchoRequest(message="__sleep__:150"))
    assert time.monotonic() - started >= 0.15
    assert response.message == "__sleep__:150"

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Echo(echo_pb2.EchoRequest(message="__sleep__:5000"), timeout=0.1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_stream_error_hook_fails_after_the_items(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    call = stub.StreamItems(echo_pb2.StreamItemsRequest(count=2, prefix="__error__:UNAVAILABLE"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for item in call:
            received.append(item.id)
    assert received == ["item-0", "item-1"]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_chat_error_hook_ends_the_stream(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    call = stub.Chat()
    await call.write(echo_pb2.EchoRequest(message="first"))
    assert (await call.read()).message == "first"
    await call.write(echo_pb2.EchoRequest(message="__error__:RESOURCE_EXHAUSTED"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_metadata_is_echoed_as_header_and_trailer(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    metadata = (("x-echo-metadata", "abc"), ("x-echo-metadata-bin", b"\x00\xff"))
    call = stub.Echo(echo_pb2.EchoRequest(message="hi"), metadata=metadata)
    await call
    initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
    assert initial.get_all("x-echo-header") == ["abc"]
    assert initial.get_all("x-echo-header-bin") == [b"\x00\xff"]
    assert trailing.get_all("x-echo-trailer") == ["abc"]
    assert trailing.get_all("x-echo-trailer-bin") == [b"\x00\xff"]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Echo(echo_pb2.EchoRequest(message="__error__:ABORTED"), metadata=metadata)
    assert raised.value.initial_metadata().get_all("x-echo-header") == ["abc"]
    assert raised.value.trailing_metadata().get_all("x-echo-trailer") == ["abc"]

    stream = stub.StreamItems(echo_pb2.StreamItemsRequest(count=1), metadata=metadata)
    assert [item.id async for item in stream] == ["item-0"]
    assert (await stream.initial_metadata()).get_all("x-echo-header") == ["abc"]
    assert (await stream.trailing_metadata()).get_all("x-echo-trailer") == ["abc"]


async def test_metadata_hook_reports_request_metadata_in_labels(stub: echo_pb2_grpc.EchoServiceStub) -> None:
    metadata = (("x-forwarded-for", "10.0.0.1"), ("x-multi", "1"), ("x-multi", "2"), ("x-raw-bin", b"\x01"))
    response = await stub.Echo(
        echo_pb2.EchoRequest(message="__metadata__", labels={"own": "x"}), metadata=metadata
    )
    assert response.labels["own"] == "x"
    assert response.labels["x-forwarded-for"] == "10.0.0.1"
    assert response.labels["x-multi"] == "1,2"
    assert response.labels["x-raw-bin"] == base64.b64encode(b"\x01").decode()


# Serving: health, reflection, start(), graceful shutdown, the command line.


@pytest.mark.parametrize("name", BACKENDS)
async def test_health_reports_serving_then_not_serving_after_stop(name: str) -> None:
    running = await BACKENDS[name].serve()
    async with grpc.aio.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", BACKENDS[name].SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND

        await running.health.enter_graceful_shutdown()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await running.stop(None)


@pytest.mark.parametrize("name", BACKENDS)
async def test_reflection_lists_and_describes_the_service(name: str) -> None:
    service_name = BACKENDS[name].SERVICE_NAME
    running = await BACKENDS[name].serve()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = await call.read()
            await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service_name))
            described = await call.read()
            await call.done_writing()
    finally:
        await running.stop(None)
    names = {service.name for service in listed.list_services_response.service}
    assert {service_name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("name", BACKENDS)
async def test_start_returns_a_started_server_and_its_port(name: str) -> None:
    server, port = await BACKENDS[name].start()
    try:
        assert port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


async def test_stop_lets_running_calls_finish_within_grace() -> None:
    async with running_backends(grace=5.0) as backends:
        channel = grpc.aio.insecure_channel(backends.echo.address)
        slow = asyncio.ensure_future(
            echo_pb2_grpc.EchoServiceStub(channel).Echo(echo_pb2.EchoRequest(message="__sleep__:300"))
        )
        await asyncio.sleep(0.1)
    # Leaving the block stopped both servers, with the slow call still running on one.
    assert (await slow).message == "__sleep__:300"
    await channel.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("name", BACKENDS)
async def test_main_serves_until_sigterm_and_exits_cleanly(name: str) -> None:
    address = f"127.0.0.1:{_free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"tests.support.{name}_backend", "--address", address, "--grace", "1",
        cwd=REPO_ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        assert f"serving on {address}" in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
