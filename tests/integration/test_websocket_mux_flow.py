"""The multiplexed WebSocket's binary framing (`grpc-ws.mux.proto`) and per-stream flow control,
through a real gateway, real `websockets` clients and the real echo backend.

Binary frames carry a stream id, a kind and protobuf messages both ways, statuses as serialized
google.rpc.Status; a stream opened with a window gets no more response messages than the client
granted, so a stream the client does not read holds back its own backend while the others flow; the
gateway grants request messages as the backend takes them and a message beyond the grant ends that
stream only.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import defaultdict

import pytest
from google.rpc import status_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import protos
from tests.support.echo_backend import Stats

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_passthrough_frames import frame as raw_frame
from .test_websocket_mux import CHAT, ITEMS, MUX, Frames, counted, mux_config, open_chat, send, url  # noqa: F401

protos.add_generated_path()
from echo.v1 import echo_pb2

PROTO = "grpc-ws.mux.proto"
OPEN, MESSAGE, HALF_CLOSE, CANCEL, CREDIT, STATUS = 1, 2, 3, 4, 5, 6


def bframe(sid: int, kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", sid, kind) + payload


def bopen(sid: int, method: str, window: int = 0) -> bytes:
    return bframe(sid, OPEN, struct.pack(">I", window) + method.encode())


class BinaryFrames:
    """What a grpc-ws.mux.proto socket received, by stream: (kind, payload)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.by_stream: dict[int, list[tuple[int, bytes]]] = defaultdict(list)

    async def next(self) -> tuple[int, int, bytes]:
        data = await asyncio.wait_for(self.ws.recv(), 5)
        assert isinstance(data, bytes)
        sid, kind = struct.unpack_from(">IB", data)
        self.by_stream[sid].append((kind, data[5:]))
        return sid, kind, data[5:]

    async def until_status(self, sid: int) -> status_pb2.Status:
        while not (self.by_stream[sid] and self.by_stream[sid][-1][0] == STATUS):
            await self.next()
        return status_pb2.Status.FromString(self.by_stream[sid][-1][1])

    def messages(self, sid: int) -> list[bytes]:
        return [payload for kind, payload in self.by_stream[sid] if kind == MESSAGE]


async def test_binary_streams_carry_protobuf_both_ways(gw_mux: Gateway) -> None:
    async with connect(url(gw_mux), subprotocols=[PROTO]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == PROTO
        got = BinaryFrames(ws)
        await ws.send(bopen(1, CHAT))
        await ws.send(bopen(2, ITEMS))
        await ws.send(bframe(1, MESSAGE, echo_pb2.EchoRequest(message="hi", repeat=2).SerializeToString()))
        await ws.send(bframe(2, MESSAGE, echo_pb2.StreamItemsRequest(count=3, prefix="b").SerializeToString()))
        assert (await got.until_status(2)).code == 0
        assert [echo_pb2.Item.FromString(m).id for m in got.messages(2)] == ["b0", "b1", "b2"]
        await ws.send(bframe(1, HALF_CLOSE))
        assert (await got.until_status(1)).code == 0
        assert [echo_pb2.EchoResponse.FromString(m).message for m in got.messages(1)] == ["hihi"]
        # An error status, and a message that does not decode, end their own stream only.
        await ws.send(bopen(3, CHAT))
        await ws.send(bframe(3, MESSAGE, echo_pb2.EchoRequest(message="__error__:NOT_FOUND").SerializeToString()))
        assert (await got.until_status(3)).code == 5
        await ws.send(bopen(4, CHAT))
        await ws.send(bframe(4, MESSAGE, b"\xff\xff\xff"))
        assert (await got.until_status(4)).code == 3
        await ws.send(bopen(5, "/echo.v1.EchoService/Nope"))
        assert (await got.until_status(5)).code == 12
        await ws.send(bopen(6, CHAT))
        await ws.send(bframe(6, CANCEL))
        assert (await got.until_status(6)).code == 1
    assert ws.close_code == 1000


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("a text frame", 1003),
        (b"\x00\x00\x01", 1007),  # shorter than a header
        (bframe(0, HALF_CLOSE), 1007),  # stream id 0
        (bframe(1, 9), 1007),  # unknown kind
        (bframe(1, CREDIT, b"\x00"), 1007),  # a credit without its 4-byte count
        (bopen(1, "no-slashes"), 1007),
        (bframe(9, MESSAGE, b""), 1007),  # never opened
    ],
)
async def test_broken_binary_frames_end_the_socket(gw_mux: Gateway, frame: str | bytes, code: int) -> None:
    async with connect(url(gw_mux), subprotocols=[PROTO]) as ws:  # type: ignore[list-item]
        await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == code


async def test_a_slow_stream_does_not_hold_back_the_others(
    counted: tuple[Backends, Stats],  # noqa: F811
    start_gateway: StartGateway,
) -> None:
    backends, stats = counted
    gw = await start_gateway(mux_config(backends))
    count = 2000
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await send(ws, 1, open={"method": ITEMS, "window": 2})
        await send(ws, 1, message={"count": count, "prefix": "p" * 4000})  # ~8 kB an item
        await open_chat(ws, 2)
        for word in ("x", "y", "z"):  # stream 2 flows while stream 1 waits for credit
            await send(ws, 2, message={"message": word})
        while len(got.results(2)) < 3:
            await asyncio.wait_for(got.next(), 5)
        await asyncio.sleep(0.5)
        assert len([f for f in got.by_stream[1] if "result" in f]) == 2  # its window, no more
        stalled = stats.sent
        await asyncio.sleep(0.3)
        assert stats.sent == stalled < count  # the backend is held back too (bounded in flight)
        await send(ws, 1, credit=3)
        while len([f for f in got.by_stream[1] if "result" in f]) < 5:
            await asyncio.wait_for(got.next(), 5)
        await asyncio.sleep(0.2)
        assert len([f for f in got.by_stream[1] if "result" in f]) == 5
        await send(ws, 1, control="cancel")
        assert (await got.until_status(1))["code"] == 1
        await send(ws, 2, message={"message": "still here"})
        while len(got.results(2)) < 4:
            await asyncio.wait_for(got.next(), 5)


async def test_request_messages_follow_the_gateways_grants(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(mux_config(demo_backends, websocket={"inbound_queue": 2}))
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        await send(ws, 1, open={"method": CHAT, "window": 1000})
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first == {"id": 1, "credit": 2}  # the first grant: the stream's inbound_queue
        # A client that keeps to its grants: 30 messages, never more than granted in flight.
        credit, sent, results = 2, 0, 0
        while results < 30:
            while credit > 0 and sent < 30:
                await send(ws, 1, message={"message": f"m{sent}"})
                sent, credit = sent + 1, credit - 1
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if "credit" in frame:
                credit += frame["credit"]
            else:
                assert frame["result"]["message"] == f"m{results}"
                results += 1
        # One that does not: ten at once with two granted at most; that stream ends, the socket lives.
        await send(ws, 2, open={"method": CHAT, "window": 1000})
        await send(ws, 3, open={"method": CHAT})
        burst = json.dumps({"id": 2, "message": {"message": "__sleep__:300"}}).encode()
        ws.transport.write(raw_frame(1, burst) * 10)  # in one write: read by the gateway in one go
        got = Frames(ws)
        status = await got.until_status(2)
        assert status["code"] == 8 and "credit" in status["message"]
        await send(ws, 3, message={"message": "unaffected"})
        while not got.results(3):
            await asyncio.wait_for(got.next(), 5)
        assert got.results(3) == ["unaffected"]


@pytest.fixture
async def gw_mux(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(demo_backends, websocket_mux={"enabled": True, "max_streams": 10}))
