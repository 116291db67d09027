"""WebSocket passthrough at the frame level: what the relay checks and passes on as bytes.

A raw TCP client (hand-made frames) for what a library client would never send: unmasked frames,
reserved bits, unknown opcodes, an oversized header with no payload, a bad handshake, a client that
stops reading or goes silent. Real `websockets` clients and servers for the rest: fragmented
messages screened whole, pings passed end to end, frames a backend sends right after its handshake.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support import chat_backend
from tests.support.chat_backend import ChatServer

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_websocket import block_word  # noqa: F401  (fixture)


def route(upstream: str, **changes: Any) -> dict[str, Any]:
    return {"path": "/chat", "upstream": upstream, **changes}


def url(gw: Gateway) -> str:
    return gw.url.replace("http://", "ws://") + "/chat"


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A WebSocket client made by hand over TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        self.reader, self.writer, self.status = reader, writer, status

    @classmethod
    async def open(cls, gw: Gateway, version: str = "13") -> RawClient:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer, int(head.split()[1]))

    async def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        assert not b1 & 0x80, "a server frame is never masked"
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self) -> int:
        """Read until the close frame; its code."""
        while True:
            opcode, payload = await asyncio.wait_for(self.read_frame(), 5)
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.transport.abort()


async def test_text_messages_pass_as_raw_frames(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw)
    try:
        assert client.status == 101
        client.writer.write(frame(1, b"one") + frame(1, b"two", fin=False) + frame(0, b"three"))
        assert await client.read_frame() == (1, b"one")
        assert await client.read_frame() == (1, b"twothree")
    finally:
        client.close()


@pytest.mark.parametrize(
    "bad",
    [
        frame(1, b"hello", mask=False),  # a client frame must be masked
        frame(1, b"hello", rsv=0x40),  # no extension was negotiated
        frame(3, b"hello"),  # reserved opcode
        frame(0, b"hello"),  # a continuation with no message started
        frame(9, b"p", fin=False),  # a fragmented control frame
        frame(9, b"p" * 126),  # a control frame over 125 bytes
        frame(8, b"\x03"),  # a close payload of one byte
        frame(8, struct.pack("!H", 1005)),  # a close code that may not be sent
        frame(1, b"a", fin=False) + frame(2, b"b"),  # a new message inside a fragmented one
    ],
    ids=[
        "unmasked",
        "rsv",
        "opcode",
        "continuation",
        "fragmented-ping",
        "long-ping",
        "close-1-byte",
        "close-1005",
        "interleaved",
    ],
)
async def test_invalid_frames_close_with_1002(
    bad: bytes, demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw)
    try:
        client.writer.write(frame(1, b"first"))
        assert await client.read_frame() == (1, b"first")
        backend_side = next(iter(chat.clients))
        client.writer.write(bad)
        assert await client.close_code() == 1002
        await asyncio.wait_for(backend_side.wait_closed(), 3)
        assert backend_side.close_code == 1001  # the backend is told the client went away
    finally:
        client.close()


async def test_oversized_frame_refused_from_its_header(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(
        demo_config(demo_backends, websocket_routes=[route(chat.url, max_message_bytes=1000)])
    )
    client = await RawClient.open(gw)
    try:
        client.writer.write(frame(2, b"z" * 100_000)[:14])  # the header of a 100 kB frame, no payload
        assert await client.close_code() == 1009
        # Fragments count together: 600 + 600 bytes is over 1000.
        client2 = await RawClient.open(gw)
        client2.writer.write(frame(1, b"a" * 600, fin=False) + frame(0, b"b" * 600))
        assert await client2.close_code() == 1009
        client2.close()
    finally:
        client.close()
    assert chat.received == 0


async def test_bad_client_handshake_is_refused(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw, version="12")
    client.close()
    assert client.status == 400
    assert not chat.clients  # refused before the backend was dialled


async def test_fragmented_message_screened_whole(
    block_word: None,  # noqa: F811
    demo_backends: Backends,
    chat: ChatServer,
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        demo_config(demo_backends, websocket_routes=[route(chat.url)], policies=[{"name": "block_word"}])
    )
    async with connect(url(gw)) as ws:
        await ws.send(["fine ", "words"])
        assert await ws.recv() == "fine words"
        await ws.send(b"\x00binary")
        assert await ws.recv() == b"\x00binary"
        await ws.send(["for", "bidden"])  # the word is split across fragments: screened whole
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008 and chat.received == 2


async def test_ping_goes_to_the_backend_and_its_pong_comes_back(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw)
    try:
        client.writer.write(frame(9, b"are you there"))
        assert await asyncio.wait_for(client.read_frame(), 3) == (10, b"are you there")
    finally:
        client.close()


async def test_frames_sent_right_after_the_backend_handshake_arrive(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    async def greet(connection: ServerConnection) -> None:
        await connection.send("welcome")  # before the client said anything
        async for message in connection:
            await connection.send(message)

    async with serve(greet, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        gw = await start_gateway(
            demo_config(demo_backends, websocket_routes=[route(f"ws://127.0.0.1:{port}/")])
        )
        async with connect(url(gw)) as ws:
            assert await asyncio.wait_for(ws.recv(), 3) == "welcome"
            await ws.send("x")
            assert await ws.recv() == "x"


async def test_silent_client_is_found_half_open(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url, heartbeat_s=0.2)]))
    client = await RawClient.open(gw)  # it never answers the gateway's pings
    try:
        client.writer.write(frame(1, b"x"))
        assert await client.read_frame() == (1, b"x")
        backend_side = next(iter(chat.clients))
        await asyncio.wait_for(backend_side.wait_closed(), 3)
        assert backend_side.close_code == 1001
    finally:
        client.close()


async def test_silent_backend_is_found_half_open(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url, heartbeat_s=0.2)]))
    async with connect(url(gw)) as ws:
        await ws.send("x")
        await ws.recv()
        for connection in chat.clients:
            connection.transport.pause_reading()  # the backend hears nothing, so answers no ping
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
    assert ws.close_code == 1011


async def test_slow_client_slows_the_backend(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw)
    client.writer.transport.pause_reading()  # type: ignore[attr-defined]  # the client reads nothing
    asks = 300
    try:
        client.writer.write(b"".join(frame(1, b"__big__:100000") for _ in range(asks)))  # 30 MB of answers
        await asyncio.sleep(1.0)
        stalled = chat.received
        assert stalled < asks  # the gateway stopped reading the backend, whose sends now wait
        await asyncio.sleep(0.3)
        assert chat.received == stalled
        client.writer.transport.resume_reading()  # type: ignore[attr-defined]
        for _ in range(asks):
            opcode, payload = await asyncio.wait_for(client.read_frame(), 5)
            assert opcode == 1 and len(payload) == 100_000
    finally:
        client.close()


async def test_refused_message_ends_with_a_full_close_handshake(
    block_word: None,  # noqa: F811
    demo_backends: Backends,
    chat: ChatServer,
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        demo_config(demo_backends, websocket_routes=[route(chat.url)], policies=[{"name": "block_word"}])
    )
    loop = asyncio.get_running_loop()
    async with connect(url(gw), close_timeout=5) as ws:
        await ws.send("forbidden")
        await ws.send("more after it")  # read and dropped while the gateway closes
        sent = loop.time()
        await asyncio.wait_for(ws.wait_closed(), 5)
    # The gateway read the client's answer to its close and closed at once (no close timeout).
    assert ws.close_code == 1008 and loop.time() - sent < 1.0 and chat.received == 0


async def test_frames_split_anywhere_pass_whole(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    client = await RawClient.open(gw)
    try:
        big, small = frame(2, b"B" * 1000), frame(2, b"s" * 130)  # both with a 16-bit extended length
        for chunk in (big[:50], big[50:] + small[:3], small[3:]):  # the second ends inside a header
            client.writer.write(chunk)
            await client.writer.drain()
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(client.read_frame(), 3) == (2, b"B" * 1000)
        assert await asyncio.wait_for(client.read_frame(), 3) == (2, b"s" * 130)
    finally:
        client.close()


async def test_slow_backend_slows_the_client(
    demo_backends: Backends, chat: ChatServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, websocket_routes=[route(chat.url)]))
    async with connect(url(gw), max_size=None, ping_interval=None) as ws:
        await ws.send("x")
        await ws.recv()
        for connection in chat.clients:
            connection.transport.pause_reading()  # the backend reads nothing more
        chunk, sent = b"z" * 100_000, 0
        while sent < 100_000_000:  # without backpressure the gateway would take it all
            try:
                await asyncio.wait_for(ws.send(chunk), 1.0)
            except TimeoutError:
                break
            sent += len(chunk)
        assert sent < 100_000_000, "the client was never held back"
        assert sent < 20_000_000  # socket buffers and the gateway's high-water marks, no more
        ws.transport.abort()  # no goodbye: the backend would have megabytes to read first
        for connection in chat.clients:
            connection.transport.resume_reading()


async def test_backend_refusing_the_handshake_is_503(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    def refuse(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(403, "not you\n")

    async def never(connection: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        gw = await start_gateway(
            demo_config(demo_backends, websocket_routes=[route(f"ws://127.0.0.1:{port}/")])
        )
        client = await RawClient.open(gw)
        client.close()
    assert client.status == 503


async def test_a_thousand_concurrent_passthrough_sockets(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    chat = await chat_backend.start(broadcast=False)  # every client a room of its own
    try:
        gw = await start_gateway(
            demo_config(demo_backends, websocket_routes=[route(chat.url, max_connections_per_client=1000)])
        )
        opened = asyncio.Event()
        open_count = 0

        opening = asyncio.Semaphore(100)  # dialled 100 at a time: listen backlogs are about that deep

        async def one(i: int) -> list[str | bytes]:
            nonlocal open_count
            async with opening:
                ws = await connect(url(gw), open_timeout=30, ping_interval=None)
            async with ws:
                open_count += 1
                if open_count == 1000:
                    opened.set()
                await asyncio.wait_for(opened.wait(), 30)  # all thousand are open at once
                got = []
                for j in range(3):
                    await ws.send(f"{i}-{j}")
                    got.append(await ws.recv())
                return got

        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(one(i) for i in range(1000)))
        assert results == [[f"{i}-{j}" for j in range(3)] for i in range(1000)]
        assert loop.time() - started < 30
    finally:
        await chat.stop()
