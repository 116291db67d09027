"""WebSocket passthrough through a real gateway to the real demo chat backend (a `websockets` server).

Text and binary frames both ways, subprotocol negotiation, close codes and reasons in both
directions, message size limits both ways, idle timeout, per-client connection limits, Origin,
credentials forwarded, per-message policies, and a backend that dies or is down.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import chat_backend
from tests.support.chat_backend import ChatServer

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_websocket import block_word  # noqa: F401  (fixture)

ORIGIN = "https://chat.example.com"


def route(chat: ChatServer, **changes: Any) -> dict[str, Any]:
    return {"path": "/chat", "upstream": chat.url, "subprotocols": ["chat.v1", "chat.v2"],
            "allowed_origins": [ORIGIN], **changes}


@pytest.fixture
async def gw(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat)]))


def url(gw: Gateway, path: str = "/chat") -> str:
    return gw.url.replace("http://", "ws://") + path


async def test_text_and_binary_both_ways(gw: Gateway) -> None:
    async with connect(url(gw)) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        await ws.send(["frag", "mented"])  # a fragmented message arrives whole
        assert await ws.recv() == "fragmented"


async def test_broadcast_between_two_clients(gw: Gateway) -> None:
    async with connect(url(gw)) as a, connect(url(gw)) as b:
        await a.send("__whoami__")
        await a.recv()  # both are connected to the backend now
        await b.send("hi from b")
        assert await a.recv() == "hi from b"
        assert await b.recv() == "hi from b"


async def test_subprotocol_negotiation(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=["chat.v2", "chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"  # the backend chose among what the client offered
        await ws.send("__whoami__")
        assert json.loads(await ws.recv())["subprotocol"] == "chat.v2"
    async with connect(url(gw), subprotocols=["chat.v9", "chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1"  # chat.v9 is not allowed by the route: never offered upstream
    async with connect(url(gw)) as ws:
        assert ws.subprotocol is None


async def test_request_context_reaches_the_backend(gw: Gateway) -> None:
    async with connect(url(gw), additional_headers={"Authorization": "Bearer t", "X-Request-Id": "r-1"}) as ws:
        await ws.send("__whoami__")
        headers = json.loads(await ws.recv())["headers"]
    assert headers["x-request-id"] == "r-1" and headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["authorization"] == "Bearer t"


async def test_backend_close_code_and_reason_reach_the_client(gw: Gateway) -> None:
    async with connect(url(gw)) as ws:
        await ws.send("__close__:4001:bye now")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4001 and ws.close_reason == "bye now"


async def test_client_close_code_and_reason_reach_the_backend(gw: Gateway, chat: ChatServer) -> None:
    async with connect(url(gw)) as ws:
        await ws.send("x")
        await ws.recv()
        backend_side = next(iter(chat.clients))
        await ws.close(4002, "client done")
    await asyncio.wait_for(backend_side.wait_closed(), 3)
    assert backend_side.close_code == 4002 and backend_side.close_reason == "client done"


async def test_message_size_limit_both_ways(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat, max_message_bytes=1000)]))
    async with connect(url(gw)) as ws:
        await ws.send("y" * 2000)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1009
    async with connect(url(gw)) as ws:
        await ws.send("__big__:5000")  # the backend sends more than the route allows
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1009


async def test_idle_timeout_closes_both(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat, idle_timeout_s=0.3)]))
    async with connect(url(gw)) as ws:
        await ws.send("x")
        await ws.recv()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
    assert ws.close_code == 1001 and ws.close_reason == "idle timeout"
    for _ in range(50):
        if not chat.clients:
            break
        await asyncio.sleep(0.02)
    assert not chat.clients


async def test_per_client_connection_limit(demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat, max_connections_per_client=2)]))
    async with connect(url(gw)), connect(url(gw)):
        with pytest.raises(InvalidStatus) as third:
            async with connect(url(gw)):
                pass
        assert third.value.response.status_code == 429
    async with connect(url(gw)) as ws:  # the slots came back when those closed
        await ws.send("again")
        assert await ws.recv() == "again"


async def test_origin_checked(gw: Gateway) -> None:
    async with connect(url(gw), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send("ok")
        assert await ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(gw), origin="https://other.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


async def test_backend_down_is_503_before_the_upgrade(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends, websocket_routes=[{"path": "/chat", "upstream": "ws://127.0.0.1:1/chat"}])
    gw = await start_gateway(raw)
    with pytest.raises(InvalidStatus) as down:
        async with connect(url(gw)):
            pass
    assert down.value.response.status_code == 503


async def test_backend_dying_closes_the_client(demo_backends: Backends, start_gateway: StartGateway) -> None:
    chat = await chat_backend.start()
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat)]))
    async with connect(url(gw)) as ws:
        await ws.send("x")
        await ws.recv()
        for connection in list(chat.clients):
            connection.transport.abort()  # the backend's TCP connection drops, no close frame
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
    assert ws.close_code == 1011
    await chat.stop()


async def test_client_vanishing_closes_the_backend(gw: Gateway, chat: ChatServer) -> None:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url(gw).replace("ws://", "http://"))
    await ws.send_str("x")
    assert (await ws.receive()).data == "x"
    backend_side = next(iter(chat.clients))
    ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await session.close()
    await asyncio.wait_for(backend_side.wait_closed(), 3)
    assert backend_side.close_code == 1001


async def test_policies_screen_passthrough_messages(
    block_word: None, demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway  # noqa: F811
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat)], policies=[{"name": "block_word"}]))
    async with connect(url(gw)) as ws:
        await ws.send("fine")
        assert await ws.recv() == "fine"
        await ws.send("forbidden words")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008 and chat.received == 1
