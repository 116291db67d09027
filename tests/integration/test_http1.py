"""The lean HTTP/1.1 server (`gateway/http1.py`) against aiohttp, on real sockets.

Every response the lean server writes must be byte for byte what aiohttp writes for the same
request (the Date header and the echo backend's clock aside), so the same raw requests go to a
gateway with the lean server and to one without it. Then what only a connection shows: pipelined
requests answered in order, keep-alive and `Connection: close`, the hand-over to aiohttp in the
middle of a connection (a WebSocket upgrade, a chunked body, a malformed request), the body limit,
HEAD, and a client that leaves while its call is at the backend.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import GatewayConfig
from gateway.server import Serving, start_serving
from tests.integration.conftest import Backends, demo_config

Start = Callable[..., Awaitable[Serving]]
ECHO = b'{"message":"hello world","repeat":1}'


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    servings: list[Serving] = []

    async def start(raw: dict[str, Any], lean: bool = True) -> Serving:
        serving = await start_serving(GatewayConfig.model_validate(raw), lean=lean)
        servings.append(serving)
        return serving

    try:
        yield start
    finally:
        for serving in reversed(servings):
            await serving.stop()


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: gw", b"X-Request-Id: fixed",
            b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def get(path: str, *extra: bytes, method: bytes = b"GET") -> bytes:
    return b"\r\n".join([method + b" " + path.encode() + b" HTTP/1.1", b"Host: gw", b"X-Request-Id: fixed", *extra]) + (
        b"\r\n\r\n"
    )


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    found = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if head_only or found is None:
        return head
    return head + await asyncio.wait_for(reader.readexactly(int(found.group(1))), 5)


async def exchange(port: int, data: bytes, responses: int = 1, head_only: bool = False) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return [await read_response(reader, head_only) for _ in range(responses)]
    finally:
        writer.close()


def normal(response: bytes) -> bytes:
    """Without what differs between two runs: the date and the echo backend's clock."""
    response = re.sub(rb"\r\nDate: [^\r]+", b"\r\nDate: -", response)
    return re.sub(rb'"receivedAtUnixNanos":"\d+"', b'"receivedAtUnixNanos":"-"', response)


CASES = {
    "echo": post("/v1/echo", ECHO),
    "echo, close": post("/v1/echo", ECHO, b"Connection: close"),
    "echo, keep-alive said": post("/v1/echo", ECHO, b"Connection: keep-alive"),
    "echo, backend metadata": post("/v1/echo", ECHO, b"X-Echo-Metadata: v1"),
    "item": get("/v1/items/item-1"),
    "item, encoded": get("/v1/items/it%65m-1"),
    "item, query": get("/v1/items/item-1?tag=a&tag=b"),
    "head": get("/v1/items/item-1", method=b"HEAD"),
    "not found": get("/nowhere/at/all"),
    "wrong method": get("/v1/echo", method=b"DELETE"),
    "malformed json": post("/v1/echo", b'{"message":'),
    "unknown field": post("/v1/echo", b'{"nope":1}'),
    "backend error": get("/v1/items/__error__:NOT_FOUND"),
    "library not found": get("/v1/shelves/404/books/1"),
    "grpc-timeout malformed": get("/v1/items/item-1", b"Grpc-Timeout: soon"),
    "head, not found": get("/nowhere", method=b"HEAD"),
    "preflight": get("/v1/echo", b"Origin: http://a.example", b"Access-Control-Request-Method: POST",
                     method=b"OPTIONS"),
    "preflight, refused": get("/v1/echo", b"Origin: http://b.example", b"Access-Control-Request-Method: POST",
                              method=b"OPTIONS"),
    "preflight, no origin": get("/v1/echo", b"Access-Control-Request-Method: POST", method=b"OPTIONS"),
    "cors": post("/v1/echo", ECHO, b"Origin: http://a.example"),
    "bad request line": b"GET /v1/items/1 HTTP/1.1 extra\r\nHost: gw\r\n\r\n",
    "space before colon": b"GET /v1/items/1 HTTP/1.1\r\nHost : gw\r\n\r\n",
    "http/1.0": b"GET /v1/items/item-1 HTTP/1.0\r\nHost: gw\r\nX-Request-Id: fixed\r\n\r\n",
    "chunked": b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nX-Request-Id: fixed\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n1f\r\nsage\":\"hello world\",\"repeat\":1}\r\n0\r\n\r\n",
    "body over the limit": post("/v1/echo", b'{"message":"' + b"x" * 3000 + b'"}'),
    "length over the limit": b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nX-Request-Id: fixed\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 999999\r\n\r\n{}",
}


async def test_the_same_bytes_as_aiohttp(demo_backends: Backends, serve: Start) -> None:
    raw = demo_config(demo_backends, server={"max_body_bytes": 2048})
    raw["policies"] = [
        {"name": "cors", "config": {"allow_origins": ["http://a.example"]}},
        {"name": "rate_limit", "config": {"limits": [{"name": "ip", "key": "ip", "burst": 1000, "per_second": 1}]}},
    ]
    lean = await serve(raw, lean=True)
    plain = await serve(raw, lean=False)
    for name, data in CASES.items():
        head_only = name.startswith("head")
        ours = await exchange(lean.public_port, data, head_only=head_only)
        theirs = await exchange(plain.public_port, data, head_only=head_only)
        assert normal(ours[0]) == normal(theirs[0]), name
    front = lean.listeners[-1].front
    assert front is not None and (front.served, front.handed_over) == (21, 5)


async def test_pipelined_requests_are_answered_in_order(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends))
    batch = b"".join(
        get(f"/v1/items/__sleep__:{ms}").replace(b"X-Request-Id: fixed", f"X-Request-Id: r{i}".encode())
        for i, ms in enumerate((200, 0, 50))
    ) + get("/v1/items/last").replace(b"X-Request-Id: fixed", b"X-Request-Id: r3")
    answers = await exchange(gw.public_port, batch, responses=4)
    assert [re.search(rb"X-Request-Id: (\w+)", a).group(1) for a in answers] == [b"r0", b"r1", b"r2", b"r3"]  # type: ignore[union-attr]
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)


async def test_keep_alive_and_close(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    for _ in range(3):
        writer.write(get("/v1/items/item-1"))
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.write(post("/v1/echo", ECHO, b"Connection: close"))
    answer = await read_response(reader)
    assert b"\r\nConnection: close\r\n" in answer
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the gateway closed the connection
    writer.close()


async def test_idle_keep_alive_connection_is_closed(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends, server={"idle_timeout_s": 0.3}))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    writer.write(get("/v1/items/item-1"))
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


async def test_unary_then_websocket_on_one_connection(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends))
    front = gw.listeners[-1].front
    assert front is not None
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{gw.public_port}/v1/items/item-1") as r:
            assert r.status == 200
            await r.read()
        assert front.served == 1 and len(front.connections) == 1
        ws = await session.ws_connect(f"ws://127.0.0.1:{gw.public_port}/v1/items:stream")
        await ws.send_str(json.dumps({"count": 2, "prefix": "w"}))
        got = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert [m["result"]["id"] for m in got] == ["w0", "w1"]
        await ws.close()
    assert front.handed_over == 1  # the same connection went on under aiohttp


async def test_unary_then_chunked_post_on_one_connection(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    writer.write(get("/v1/items/item-1"))
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.write(CASES["chunked"])
    answer = await read_response(reader)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b'"message":"hello world"' in answer
    writer.write(get("/v1/items/item-2"))  # aiohttp's from now on, still keep-alive
    assert b'"id":"item-2"' in await read_response(reader)
    writer.close()
    front = gw.listeners[-1].front
    assert front is not None and front.served == 1 and front.handed_over == 1


async def test_body_arriving_late_is_read_by_aiohttp(demo_backends: Backends, serve: Start) -> None:
    gw = await serve(demo_config(demo_backends))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    data = post("/v1/echo", ECHO)
    writer.write(data[:-10])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(data[-10:])
    answer = await read_response(reader)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"hello world" in answer
    writer.close()


async def test_client_leaving_cancels_the_call(demo_backends: Backends, serve: Start, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    raw = demo_config(demo_backends)
    raw["policies"] = [{"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}}]
    gw = await serve(raw)
    front = gw.listeners[-1].front
    assert front is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    writer.write(get("/v1/items/__sleep__:5000"))
    await writer.drain()
    await asyncio.sleep(0.3)
    assert len(front.connections) == 1 and next(iter(front.connections)).task is not None
    left = asyncio.get_running_loop().time()
    writer.transport.abort()
    for _ in range(60):
        await asyncio.sleep(0.05)
        if log.exists() and '"status":499' in log.read_text():
            break
    assert '"status":499' in log.read_text()
    assert asyncio.get_running_loop().time() - left < 2.0  # not after the backend's 5 s
    assert not front.connections


async def test_drain_lets_the_call_in_flight_finish(demo_backends: Backends) -> None:
    gw = await start_serving(GatewayConfig.model_validate(demo_config(demo_backends, server={"shutdown_grace_s": 5})))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    idle_writer.write(get("/v1/items/item-1"))
    await read_response(idle_reader)
    writer.write(get("/v1/items/__sleep__:500"))
    await writer.drain()
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(gw.stop())
    answer = await read_response(reader)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in answer
    assert await asyncio.wait_for(idle_reader.read(), 3) == b""  # the idle one was closed at once
    await stopping
    writer.close()
    idle_writer.close()


async def test_one_task_serves_a_keep_alive_connection(demo_backends: Backends, serve: Start) -> None:
    """Requests one after another, then a pipelined burst: one task for the connection, answers in order."""
    gw = await serve(demo_config(demo_backends))
    front = gw.listeners[-1].front
    assert front is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    tasks = set()
    for n in range(3):
        writer.write(get(f"/v1/items/item-{n}"))
        assert f'"id":"item-{n}"'.encode() in await read_response(reader)
        (conn,) = front.connections
        assert not conn.busy
        tasks.add(conn.task)
    writer.write(b"".join(get(f"/v1/items/p{n}") for n in range(4)))
    for n in range(4):
        assert f'"id":"p{n}"'.encode() in await read_response(reader)
    (conn,) = front.connections
    tasks.add(conn.task)
    assert len(tasks) == 1 and conn.task is not None and not conn.task.done()  # waiting for the next request
    writer.close()
    await writer.wait_closed()
    for _ in range(40):
        if conn.task.done():
            break
        await asyncio.sleep(0.05)
    assert conn.task.done() and not front.connections  # gone with its connection


async def test_the_connection_task_ends_when_an_idle_connection_is_handed_over(
    demo_backends: Backends, serve: Start
) -> None:
    gw = await serve(demo_config(demo_backends))
    front = gw.listeners[-1].front
    assert front is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.public_port)
    writer.write(get("/v1/items/item-1"))
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    (conn,) = front.connections
    task = conn.task
    assert task is not None and not task.done()  # idle, waiting for the next request
    writer.write(CASES["chunked"])  # aiohttp's: the connection is handed over while its task waits
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    assert front.handed_over == 1 and task.done() and not task.cancelled()
    writer.close()
