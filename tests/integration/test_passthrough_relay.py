"""How the passthrough relay holds the two connections: what aiohttp kept is passed on, messages are
counted in their size buckets, and a closed socket is forgotten by the server as any other.

After both handshakes the relay replaces each connection's protocol with its own (the client's was
aiohttp's, behind the listener's guard), so these check what that must not lose: bytes the client
sent with its upgrade request, the server's count of open connections (aiohttp still hears of the
loss), and the message metrics, now tallied and pushed before a scrape.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect

from tests.support.chat_backend import ChatServer

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_metrics_tracing import get, scrape, stop, until
from .test_passthrough_frames import RawClient, frame, route, url
from .test_serving import serve_config

ROUTE = "websocket /chat"
BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


@pytest.fixture
async def gw(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))


async def test_frames_sent_with_the_upgrade_request_arrive(gw: Gateway) -> None:
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    writer.write(request + frame(1, b"early") + frame(1, b"bird"))  # aiohttp holds these until the relay
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        client = RawClient(reader, writer, int(head.split()[1]))
        assert client.status == 101
        assert await asyncio.wait_for(client.read_frame(), 3) == (1, b"early")
        assert await asyncio.wait_for(client.read_frame(), 3) == (1, b"bird")
        writer.write(frame(1, b"later"))
        assert await asyncio.wait_for(client.read_frame(), 3) == (1, b"later")
    finally:
        writer.transport.abort()


async def test_message_sizes_counted_in_their_buckets(gw: Gateway) -> None:
    sizes = [0, 1, 16, 17, 64, 65, 1023, 1024, 1025, 70_000]  # each side of the bounds, and a big one
    before = await scrape(gw.http, gw.admin)
    async with connect(url(gw), max_size=None) as ws:
        for size in sizes:
            await ws.send("x" * size)
            assert len(await ws.recv()) == size
        await ws.send(["a" * 3000, "b" * 3000])  # one message of two fragments: 6000 bytes
        assert await ws.recv() == "a" * 3000 + "b" * 3000
    sizes.append(6000)
    after = await scrape(gw.http, gw.admin)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    for direction in ("in", "out"):
        labels = {"route": ROUTE, "direction": direction}
        assert delta("portcullis_ws_messages_total", **labels) == len(sizes)
        assert delta("portcullis_ws_message_bytes_count", **labels) == len(sizes)
        assert delta("portcullis_ws_message_bytes_sum", **labels) == sum(sizes)
        for bound in BUCKETS:  # cumulative, `le` inclusive, as prometheus-client's own observe
            counted = delta("portcullis_ws_message_bytes_bucket", le=f"{bound:.1f}", **labels)
            assert counted == sum(1 for s in sizes if s <= bound), (direction, bound)
        assert delta("portcullis_ws_message_bytes_bucket", le="+Inf", **labels) == len(sizes)


async def test_closed_sockets_are_forgotten_by_the_server(gw: Gateway, chat: ChatServer) -> None:
    async def open_connections() -> float:
        return get(await scrape(gw.http, gw.admin), "portcullis_http_connections_open")

    before = await open_connections()
    async with connect(url(gw)) as closed_by_client:
        await closed_by_client.send("x")
        await closed_by_client.recv()
    async with connect(url(gw)) as closed_by_backend:
        await closed_by_backend.send("__close__:4000:bye")
        await asyncio.wait_for(closed_by_backend.wait_closed(), 3)
    assert closed_by_backend.close_code == 4000
    vanished = await RawClient.open(gw)
    vanished.writer.write(frame(1, b"x"))
    assert await vanished.read_frame() == (1, b"x")
    vanished.close()  # no close frame: the connection just drops

    async def back_to_before() -> bool:
        return await open_connections() == before

    await until(back_to_before)
    assert not chat.clients


async def test_size_limit_below_the_short_frame_length(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    # A limit under 126 bytes cuts into the frames the relay checks in one test (7-bit lengths).
    gw = await start_gateway(
        demo_config(demo_backends, websocket_routes=[route(chat.url, max_message_bytes=100)])
    )
    client = await RawClient.open(gw)
    try:
        client.writer.write(frame(1, b"a" * 100) + frame(2, b"b" * 100))
        assert await client.read_frame() == (1, b"a" * 100)
        assert await client.read_frame() == (2, b"b" * 100)
        client.writer.write(frame(1, b"c" * 101))
        assert await client.close_code() == 1009
    finally:
        client.close()
    assert chat.received == 2


async def test_lengths_either_side_of_the_7_bit_limit(gw: Gateway) -> None:
    client = await RawClient.open(gw)
    try:
        for size in (124, 125, 126, 127):  # 126 and up take a 16-bit extended length
            client.writer.write(frame(2, bytes([size % 256]) * size))
            assert await asyncio.wait_for(client.read_frame(), 3) == (2, bytes([size % 256]) * size)
    finally:
        client.close()


@pytest.mark.slow
async def test_two_workers_count_every_message(
    tmp_path: Path, demo_backends: Backends, chat: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With several workers the tallies write through (worker 0's scrape reads the others' files).
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    served = await serve_config(
        tmp_path, demo_config(demo_backends, websocket_routes=[route(chat.url)]), workers=2
    )
    try:
        ws_url = served.url.replace("http://", "ws://") + "/chat"
        sizes = [5, 100, 2000]
        for _ in range(8):  # a connection each: SO_REUSEPORT spreads them over the workers
            async with connect(ws_url) as ws:
                for size in sizes:
                    await ws.send("y" * size)
                    assert len(await ws.recv()) == size
        async with aiohttp.ClientSession() as http:
            samples = await scrape(http, served.admin)
        for direction in ("in", "out"):
            labels = {"route": ROUTE, "direction": direction}
            assert get(samples, "portcullis_ws_messages_total", **labels) == 8 * len(sizes)
            assert get(samples, "portcullis_ws_message_bytes_count", **labels) == 8 * len(sizes)
            assert get(samples, "portcullis_ws_message_bytes_sum", **labels) == 8 * sum(sizes)
            assert get(samples, "portcullis_ws_message_bytes_bucket", le="256.0", **labels) == 16
    finally:
        await stop(served.proc, list(served.workers.values()))
