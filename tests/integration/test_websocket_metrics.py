"""WebSocket message metrics on the admin `/metrics`, through a real gateway and real clients.

`portcullis_ws_messages_total{route,direction}` and `portcullis_ws_message_bytes{route,direction}`
count and size every message passed on (status and control frames are not messages), and
`portcullis_ws_connections_open{route}` follows open sockets, for gRPC streams over WebSocket,
passthrough and the multiplexed mode. Values are compared before and after, since the registry
lives as long as the test process.
"""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from tests.support.chat_backend import ChatServer

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_metrics_tracing import Samples, get, scrape, until

CHAT = "echo.v1.EchoService.Chat"
HALF_CLOSE = '{"@control": "half_close"}'


@pytest.fixture
async def gw(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(
        demo_backends, websocket_routes=[{"path": "/chat", "upstream": chat.url}],
        websocket_mux={"enabled": True},
    ))


def ws_url(gw: Gateway, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def assert_messages(before: Samples, after: Samples, route: str, sizes_in: list[int], sizes_out: list[int]) -> None:
    for direction, sizes in (("in", sizes_in), ("out", sizes_out)):
        labels = {"route": route, "direction": direction}
        assert delta(before, after, "portcullis_ws_messages_total", **labels) == len(sizes)
        assert delta(before, after, "portcullis_ws_message_bytes_count", **labels) == len(sizes)
        assert delta(before, after, "portcullis_ws_message_bytes_sum", **labels) == sum(sizes)
        small = delta(before, after, "portcullis_ws_message_bytes_bucket", le="64.0", **labels)
        assert small == sum(1 for s in sizes if s <= 64)


async def open_sockets(gw: Gateway, route: str) -> float:
    return get(await scrape(gw.http, gw.admin), "portcullis_ws_connections_open", route=route)


async def test_grpc_over_websocket_counts_each_message(gw: Gateway) -> None:
    before = await scrape(gw.http, gw.admin)
    sent = [json.dumps({"message": "a"}), json.dumps({"message": "b" * 100})]
    received = []
    async with connect(ws_url(gw, "/ws/echo.v1.EchoService/Chat")) as ws:
        assert await open_sockets(gw, CHAT) == get(before, "portcullis_ws_connections_open", route=CHAT) + 1
        for text in sent:
            await ws.send(text)
            received.append(await ws.recv())
        await ws.send(HALF_CLOSE)
        await ws.recv()  # the status frame: not a message
    after = await scrape(gw.http, gw.admin)
    assert_messages(before, after, CHAT, [len(t) for t in sent], [len(str(t).encode()) for t in received])

    async def closed() -> bool:
        return await open_sockets(gw, CHAT) == get(before, "portcullis_ws_connections_open", route=CHAT)

    await until(closed)


async def test_passthrough_counts_each_message_in_bytes(gw: Gateway) -> None:
    route = "websocket /chat"
    before = await scrape(gw.http, gw.admin)
    async with connect(ws_url(gw, "/chat")) as ws:
        assert await open_sockets(gw, route) == get(before, "portcullis_ws_connections_open", route=route) + 1
        await ws.send("héllo")  # 6 bytes, 5 characters
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00" * 300)
        await ws.recv()
    after = await scrape(gw.http, gw.admin)
    assert_messages(before, after, route, [6, 300], [6, 300])

    async def closed() -> bool:
        return await open_sockets(gw, route) == get(before, "portcullis_ws_connections_open", route=route)

    await until(closed)


async def test_multiplexed_streams_count_under_their_method(gw: Gateway) -> None:
    before = await scrape(gw.http, gw.admin)
    frames_in = [
        json.dumps({"id": sid, "message": {"message": f"m{sid}"}}) for sid in (1, 2)
    ]
    received = []
    async with connect(ws_url(gw, "/ws"), subprotocols=["grpc-ws.mux.json"]) as ws:  # type: ignore[list-item]
        assert await open_sockets(gw, "mux /ws") == get(before, "portcullis_ws_connections_open", route="mux /ws") + 1
        for sid, frame in zip((1, 2), frames_in):
            await ws.send(json.dumps({"id": sid, "open": {"method": "/echo.v1.EchoService/Chat"}}))
            await ws.send(frame)
            received.append(await ws.recv())
    after = await scrape(gw.http, gw.admin)
    assert_messages(before, after, CHAT, [len(f) for f in frames_in], [len(str(t).encode()) for t in received])
