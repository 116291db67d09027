"""Several gRPC streams over one WebSocket (`grpc-ws.mux.json`) through a real gateway, with real
`websockets` clients and the real echo backend.

Concurrent bidirectional streams interleave, each keeping its own order; one stream's error, invalid
message or policy refusal ends that stream only; a cancel reaches the backend; the stream limit
refuses an open and frees a slot when a stream ends; frames that break the framing end the socket
(1007, 1003); the subprotocol is required; credentials and per-stream policies apply.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import echo_backend
from tests.support.echo_backend import Stats
from tests.support.tokens import AUDIENCE, claims, hmac_token

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_websocket import block_word  # noqa: F401  (fixture)

MUX = "grpc-ws.mux.json"
CHAT = "/echo.v1.EchoService/Chat"
ITEMS = "/echo.v1.EchoService/StreamItems"
OK = {"code": 0, "message": "", "details": []}


def mux_config(backends: Backends, **overrides: Any) -> dict[str, Any]:
    return demo_config(backends, websocket_mux={"enabled": True, "max_streams": 3}, **overrides)


@pytest.fixture
async def counted(demo_backends: Backends) -> AsyncIterator[tuple[Backends, Stats]]:
    stats = Stats()
    echo = await echo_backend.serve(stats=stats)
    try:
        yield Backends(echo, demo_backends.library), stats
    finally:
        await echo.stop(0)


@pytest.fixture
async def gw(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(mux_config(demo_backends))


def url(gw: Gateway, path: str = "/ws") -> str:
    return gw.url.replace("http://", "ws://") + path


async def send(ws: ClientConnection, stream_id: int, **frame: Any) -> None:
    await ws.send(json.dumps({"id": stream_id, **frame}))


async def open_chat(ws: ClientConnection, stream_id: int, method: str = CHAT) -> None:
    await send(ws, stream_id, open={"method": method})


class Frames:
    """What one socket received, sorted by stream id, read as it arrives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.by_stream: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
        self.order: list[tuple[int | None, str]] = []  # (id, result message or "status") in arrival order

    async def next(self) -> dict[str, Any]:
        frame = json.loads(await self.ws.recv())
        sid = frame.get("id")
        self.by_stream[sid].append(frame)
        self.order.append((sid, frame["result"].get("message", "") if "result" in frame else "status"))
        return frame

    async def until_status(self, stream_id: int) -> dict[str, Any]:
        """Read until stream `stream_id`'s status frame; return that status."""
        while not (self.by_stream[stream_id] and "status" in self.by_stream[stream_id][-1]):
            await asyncio.wait_for(self.next(), 5)
        status: dict[str, Any] = self.by_stream[stream_id][-1]["status"]
        return status

    def results(self, stream_id: int) -> list[str]:
        return [f["result"]["message"] for f in self.by_stream[stream_id] if "result" in f]


async def test_two_bidi_streams_interleave_on_one_socket(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == MUX
        got = Frames(ws)
        await open_chat(ws, 1)
        await open_chat(ws, 2)
        await send(ws, 1, message={"message": "__sleep__:400"})  # stream 1 is busy for a while...
        for word in ("a", "b", "c"):  # ...while stream 2 answers at once
            await send(ws, 2, message={"message": word, "repeat": 2})
        for _ in range(3):
            await got.next()
        assert got.order == [(2, "aa"), (2, "bb"), (2, "cc")]
        await send(ws, 1, message={"message": "after"})
        await send(ws, 1, control="half_close")
        await send(ws, 2, control="half_close")
        assert await got.until_status(1) == OK
        assert await got.until_status(2) == OK
        assert got.results(1) == ["__sleep__:400", "after"]  # each stream keeps its own order
        assert got.results(2) == ["aa", "bb", "cc"]
        # The socket outlives its streams: a new one opens on it.
        await open_chat(ws, 7)
        await send(ws, 7, message={"message": "again"})
        assert (await got.next())["result"]["message"] == "again"
    assert ws.close_code == 1000


async def test_server_streaming_method(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await open_chat(ws, 1, ITEMS)
        await send(ws, 1, message={"count": 3, "prefix": "m"})  # implicitly half-closed after it
        assert await got.until_status(1) == OK
        assert [f["result"]["id"] for f in got.by_stream[1][:-1]] == ["m0", "m1", "m2"]


async def test_one_streams_error_leaves_the_others_running(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await open_chat(ws, 1)
        await open_chat(ws, 2)
        await open_chat(ws, 3)
        await send(ws, 2, message={"message": "first"})
        await got.next()
        assert got.results(2) == ["first"]
        await send(ws, 1, message={"message": "__error__:NOT_FOUND"})  # the backend fails stream 1
        status = await got.until_status(1)
        assert status["code"] == 5 and "test hook" in status["message"]
        await send(ws, 3, message={"mesage": "typo"})  # an invalid message fails stream 3
        status = await got.until_status(3)
        assert status["code"] == 3 and status["message"]
        await send(ws, 1, message={"message": "late"})  # a frame for an ended stream is dropped
        await send(ws, 2, message={"message": "still here"})
        await got.next()
        assert got.results(2) == ["first", "still here"]
        await send(ws, 2, control="half_close")
        assert await got.until_status(2) == OK
        assert got.order[-1] == (2, "status") and len(got.by_stream[1]) == 1  # nothing after stream 1's end


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_cancel_reaches_the_backend(
    counted: tuple[Backends, Stats], start_gateway: StartGateway, client: str
) -> None:
    backends, stats = counted
    raw = mux_config(backends)
    raw["backends"]["echo"]["client"] = client
    gw = await start_gateway(raw)
    loop = asyncio.get_running_loop()
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await open_chat(ws, 1)
        await open_chat(ws, 2)
        await send(ws, 1, message={"message": "__sleep__:5000"})
        await asyncio.sleep(0.3)  # the backend is inside the call
        cancelled = loop.time()
        await send(ws, 1, control="cancel")
        status = await got.until_status(1)
        assert status["code"] == 1  # CANCELLED
        for _ in range(100):
            if stats.cancelled:
                break
            await asyncio.sleep(0.02)
        assert stats.cancelled == 1 and stats.cancelled_at[0] - cancelled < 1.0
        await send(ws, 2, message={"message": "unaffected"})
        await got.next()
        assert got.results(2) == ["unaffected"]


async def test_closing_the_socket_cancels_every_stream(
    counted: tuple[Backends, Stats], start_gateway: StartGateway
) -> None:
    backends, stats = counted
    gw = await start_gateway(mux_config(backends))
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        for sid in (1, 2):
            await open_chat(ws, sid)
            await send(ws, sid, message={"message": "__sleep__:5000"})
        await asyncio.sleep(0.3)
    for _ in range(100):
        if stats.cancelled == 2:
            break
        await asyncio.sleep(0.02)
    assert stats.cancelled == 2


async def test_too_many_streams_are_refused(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        for sid in (1, 2, 3, 4):  # the gateway allows three at once
            await open_chat(ws, sid)
        status = await got.until_status(4)
        assert status["code"] == 8 and "at most 3 streams" in status["message"]
        for sid in (1, 2, 3):  # the three open ones work
            await send(ws, sid, message={"message": f"s{sid}"})
        for _ in range(3):
            await got.next()
        await send(ws, 1, control="half_close")
        assert await got.until_status(1) == OK
        await open_chat(ws, 5)  # a slot is free again
        await send(ws, 5, message={"message": "s5"})
        await got.next()
        assert got.results(5) == ["s5"]


async def test_unknown_and_unary_methods_end_only_their_stream(gw: Gateway) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await open_chat(ws, 1, "/echo.v1.EchoService/Nope")
        assert (await got.until_status(1))["code"] == 12
        await open_chat(ws, 2, "/echo.v1.EchoService/Echo")
        assert (await got.until_status(2))["code"] == 12
        await open_chat(ws, 3)
        await send(ws, 3, message={"message": "fine"})
        await got.next()
        assert got.results(3) == ["fine"]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (['{"id": 1, "open": '], 1007),  # not JSON
        (['{"open": {"method": "/echo.v1.EchoService/Chat"}}'], 1007),  # no id
        (['{"id": 1, "message": {}, "control": "half_close"}'], 1007),  # two kinds
        (['{"id": 1, "control": "explode"}'], 1007),  # unknown control
        (['{"id": 4, "message": {"message": "x"}}'], 1007),  # never opened
        (['{"id": 2, "open": {"method": "/echo.v1.EchoService/Chat"}}',
          '{"id": 2, "open": {"method": "/echo.v1.EchoService/Chat"}}'], 1007),  # an id used twice
        ([b"binary"], 1003),
    ],
)
async def test_broken_frames_end_the_socket(gw: Gateway, frames: list[str | bytes], code: int) -> None:
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        for frame in frames:
            await ws.send(frame)
        last: dict[str, Any] = {}
        with pytest.raises(ConnectionClosed):
            while True:
                last = json.loads(await ws.recv())
    assert "id" not in last and last["status"]["code"] == 3
    assert ws.close_code == code


async def test_the_subprotocol_is_required_and_the_mode_optional(
    demo_backends: Backends, gw: Gateway, start_gateway: StartGateway
) -> None:
    with pytest.raises(InvalidStatus) as plain:
        async with connect(url(gw)):
            pass
    assert plain.value.response.status_code == 400
    off = await start_gateway(demo_config(demo_backends))  # the mode is off by default
    with pytest.raises(InvalidStatus) as missing:
        async with connect(url(off), subprotocols=[MUX]):  # type: ignore[list-item]
            pass
    assert missing.value.response.status_code == 404


async def test_policies_screen_each_streams_messages(
    block_word: None, demo_backends: Backends, start_gateway: StartGateway  # noqa: F811
) -> None:
    gw = await start_gateway(mux_config(demo_backends, policies=[{"name": "block_word"}]))
    async with connect(url(gw), subprotocols=[MUX]) as ws:  # type: ignore[list-item]
        got = Frames(ws)
        await open_chat(ws, 1)
        await open_chat(ws, 2)
        await send(ws, 1, message={"message": "this is forbidden"})
        assert await got.until_status(1) == {"code": 7, "message": "message blocked", "details": []}
        await send(ws, 2, message={"message": "fine"})
        await got.next()
        assert got.results(2) == ["fine"]


SECRET = "mux-secret-" + "s" * 48


async def test_credentials_at_the_upgrade_reach_every_stream(
    demo_backends: Backends, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PC_MUX_SECRET", SECRET)
    issuer = {"issuer": "https://hs.test", "audiences": [AUDIENCE], "algorithms": ["HS256"], "secret_env": "PC_MUX_SECRET"}
    gw = await start_gateway(mux_config(
        demo_backends, policies=[{"name": "jwt", "config": {"issuers": [issuer], "forward_claims": {"sub": "x-user-id"}}}],
    ))
    with pytest.raises(InvalidStatus) as anonymous:
        async with connect(url(gw), subprotocols=[MUX]):  # type: ignore[list-item]
            pass
    assert anonymous.value.response.status_code == 401
    token = hmac_token(claims(iss="https://hs.test", sub="dora"), SECRET.encode())
    async with connect(url(gw), subprotocols=[MUX, f"bearer.{token}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == MUX
        got = Frames(ws)
        for sid in (1, 2):
            await open_chat(ws, sid)
            await send(ws, sid, message={"message": "__metadata__"})
            await got.next()
        for sid in (1, 2):
            labels = got.by_stream[sid][0]["result"]["labels"]
            assert labels["x-user-id"] == "dora" and "authorization" not in labels
            assert labels["x-request-id"].endswith(f".{sid}")  # each stream is a call of its own


async def test_origin_is_checked_for_the_socket_and_for_each_method(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    app, other = "https://app.example.com", "https://other.example.com"
    raw = mux_config(demo_backends, websocket={"allowed_origins": [app, other]})
    raw["services"]["echo.v1.EchoService"]["websocket"] = {"allowed_origins": [app]}  # narrower for Echo
    gw = await start_gateway(raw)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(gw), subprotocols=[MUX], origin="https://evil.example"):  # type: ignore[list-item,arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with connect(url(gw), subprotocols=[MUX], origin=other) as ws:  # type: ignore[list-item,arg-type]
        got = Frames(ws)
        await open_chat(ws, 1)
        assert (await got.until_status(1))["code"] == 7  # the socket is allowed, EchoService's streams are not
    async with connect(url(gw), subprotocols=[MUX], origin=app) as ws:  # type: ignore[list-item,arg-type]
        got = Frames(ws)
        await open_chat(ws, 1)
        await send(ws, 1, message={"message": "ok"})
        await got.next()
        assert got.results(1) == ["ok"]
