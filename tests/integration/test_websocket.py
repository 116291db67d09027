"""gRPC streams over WebSocket through a real gateway, with real `websockets` and aiohttp clients.

Framing, half-close, status frames and close codes; the binary `grpc-ws.proto` subprotocol;
Origin checks; credentials from a subprotocol or a cookie; per-message policies (1008); invalid
(1007), unsupported (1003) and oversized (1009) frames; idle timeout; cancellation when the client
vanishes; backpressure; and a thousand concurrent sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protos
from gateway import policies
from gateway.call import Call
from gateway.policies import PolicySpec
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs
from tests.support import echo_backend
from tests.support.echo_backend import Stats
from tests.support.tokens import AUDIENCE, claims, hmac_token
from tests.support.waiting import settled
from translators.errors import GatewayError

from .conftest import Backends, Gateway, StartGateway, demo_config

protos.add_generated_path()
from echo.v1 import echo_pb2

CHAT_RULE = {"selector": "echo.v1.EchoService.Chat", "post": "/v1/chat", "body": "*"}
HALF_CLOSE = '{"@control": "half_close"}'
ORIGIN = "https://app.example.com"


def ws_url(gw: Gateway, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


async def frames(ws: Any) -> list[dict[str, Any]]:
    """Every text frame until the server closes, parsed."""
    out = []
    try:
        async for text in ws:
            out.append(json.loads(text))
    except ConnectionClosed:  # a close code other than 1000: the test reads ws.close_code
        pass
    return out


@pytest.fixture
async def gw(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(
        demo_backends, http_rules=[CHAT_RULE], websocket={"allowed_origins": [ORIGIN], "idle_timeout_s": 5},
    ))


async def test_bidi_chat_with_half_close(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        for word in ("a", "b"):
            await ws.send(json.dumps({"message": word, "repeat": 2}))
            assert json.loads(await ws.recv())["result"]["message"] == word * 2
        await ws.send(HALF_CLOSE)
        rest = await frames(ws)
        assert rest == [{"status": {"code": 0, "message": "", "details": []}}]
    assert ws.close_code == 1000


async def test_unannotated_method_gets_a_ws_path(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends))  # no http rule for Chat
    async with connect(ws_url(gw, "/ws/echo.v1.EchoService/Chat")) as ws:
        await ws.send('{"message": "x"}')
        assert json.loads(await ws.recv())["result"]["message"] == "x"
        await ws.send(HALF_CLOSE)
        assert (await frames(ws))[-1]["status"]["code"] == 0
    async with gw.http.post(f"{gw.url}/ws/echo.v1.EchoService/Chat", json={}) as r:
        assert r.status == 404  # a WebSocket path, not an HTTP route


async def test_server_stream_over_websocket(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/items:stream")) as ws:
        await ws.send('{"count": 3, "prefix": "w"}')
        got = await frames(ws)
    assert [f["result"]["id"] for f in got[:3]] == ["w0", "w1", "w2"]
    assert got[3] == {"status": {"code": 0, "message": "", "details": []}} and ws.close_code == 1000


async def test_backend_error_is_a_status_frame_then_1011(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        await ws.send('{"message": "ok"}')
        await ws.send('{"message": "__error__:NOT_FOUND"}')
        got = await frames(ws)
    assert got[0]["result"]["message"] == "ok"
    assert got[-1]["status"]["code"] == 5 and "test hook" in got[-1]["status"]["message"]
    assert ws.close_code == 1011 and ws.close_reason == "NOT_FOUND"


async def test_binary_protobuf_subprotocol(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/chat"), subprotocols=["grpc-ws.proto"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "grpc-ws.proto"
        await ws.send(echo_pb2.EchoRequest(message="bin", repeat=3).SerializeToString())
        reply = await ws.recv()
        assert isinstance(reply, bytes)
        assert echo_pb2.EchoResponse.FromString(reply).message == "binbinbin"
        await ws.send(HALF_CLOSE)  # control frames stay text
        assert json.loads(await ws.recv())["status"]["code"] == 0
    async with connect(ws_url(gw, "/v1/chat"), subprotocols=["grpc-ws.proto"]) as ws:  # type: ignore[list-item]
        await ws.send(b"\xff\xff\xff")
        assert json.loads(await ws.recv())["status"]["code"] == 3
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1007


async def test_json_subprotocol_is_selected_when_offered(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/chat"), subprotocols=["grpc-ws.json"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "grpc-ws.json"
        await ws.send(b"binary in json mode")
        assert json.loads(await ws.recv())["status"]["code"] == 3
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1003


@pytest.mark.parametrize(
    ("frame", "code"),
    [('{"message": ', 1007), ('{"mesage": "typo"}', 1007), ('{"@control": "explode"}', 1007), ("[1, 2]", 1007)],
)
async def test_invalid_frames_get_an_error_frame_then_1007(gw: Gateway, frame: str, code: int) -> None:
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        await ws.send(frame)
        status = json.loads(await ws.recv())["status"]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert status["code"] == 3 and status["message"]
    assert ws.close_code == code


async def test_message_after_half_close_is_1003(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/items:stream")) as ws:
        await ws.send('{"count": 1, "prefix": "__sleep__:500"}')
        await ws.send('{"count": 1}')  # a server-streaming method takes one request message
        got = await frames(ws)
    assert got[-1]["status"]["code"] == 3 and ws.close_code == 1003


async def test_oversized_frame_is_1009(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE], websocket={"max_message_bytes": 1024}))
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        await ws.send(json.dumps({"message": "x" * 500}))
        assert json.loads(await ws.recv())["result"]["message"] == "x" * 500
        await ws.send(json.dumps({"message": "x" * 5000}))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1009


async def test_unknown_and_unary_methods_are_refused_before_the_upgrade(gw: Gateway) -> None:
    with pytest.raises(InvalidStatus) as missing:
        async with connect(ws_url(gw, "/ws/echo.v1.EchoService/Nope")):
            pass
    assert missing.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as unary:
        async with connect(ws_url(gw, "/v1/echo")):
            pass
    assert unary.value.response.status_code == 501
    assert json.loads(unary.value.response.body or b"{}")["code"] == 12


async def test_origin_is_checked(gw: Gateway) -> None:
    async with connect(ws_url(gw, "/v1/chat"), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send('{"message": "allowed"}')
        assert json.loads(await ws.recv())["result"]["message"] == "allowed"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(gw, "/v1/chat"), origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


async def test_no_origin_is_allowed_by_default(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE]))
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(gw, "/v1/chat"), origin=ORIGIN):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


SECRET = "ws-secret-" + "s" * 48


@pytest.fixture
def jwt_gateway_config(demo_backends: Backends, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PC_WS_SECRET", SECRET)
    issuer = {"issuer": "https://hs.test", "audiences": [AUDIENCE], "algorithms": ["HS256"], "secret_env": "PC_WS_SECRET"}
    return demo_config(
        demo_backends, http_rules=[CHAT_RULE],
        policies=[{"name": "jwt", "config": {"issuers": [issuer], "forward_claims": {"sub": "x-user-id"}}}],
        websocket={"auth_cookie": "session"},
    )


async def test_credentials_from_subprotocol_or_cookie(jwt_gateway_config: dict[str, Any], start_gateway: StartGateway) -> None:
    gw = await start_gateway(jwt_gateway_config)
    token = hmac_token(claims(iss="https://hs.test", sub="carol"), SECRET.encode())
    with pytest.raises(InvalidStatus) as anonymous:
        async with connect(ws_url(gw, "/v1/chat")):
            pass
    assert anonymous.value.response.status_code == 401
    protocols = ["grpc-ws.json", f"bearer.{token}"]
    async with connect(ws_url(gw, "/v1/chat"), subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "grpc-ws.json"  # the bearer entry is never selected
        await ws.send('{"message": "__metadata__"}')
        labels = json.loads(await ws.recv())["result"]["labels"]
    assert labels["x-user-id"] == "carol" and "authorization" not in labels  # hide_credentials holds
    async with connect(ws_url(gw, "/v1/chat"), additional_headers={"Cookie": f"session={token}"}) as ws:
        await ws.send('{"message": "__metadata__"}')
        assert json.loads(await ws.recv())["result"]["labels"]["x-user-id"] == "carol"
    with pytest.raises(InvalidStatus) as forged:
        async with connect(ws_url(gw, "/v1/chat"), subprotocols=["bearer.not-a-token"]):  # type: ignore[list-item]
            pass
    assert forged.value.response.status_code == 401


class _BlockWordConfig(PolicyConfig):
    word: str = "forbidden"


class _BlockWord(BasePolicy):
    """A screening stand-in: refuses any message whose text contains the word."""

    name = "block_word"

    def __init__(self, configs: RouteConfigs[_BlockWordConfig]) -> None:
        self.configs = configs
        self.seen = 0

    async def on_message(self, call: Call, message: Any) -> None:
        self.seen += 1
        if self.configs.default.word in str(message):
            raise GatewayError(__import__("grpc").StatusCode.PERMISSION_DENIED, "message blocked")


@pytest.fixture
def block_word(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = policies._registry

    def with_block_word() -> dict[str, PolicySpec]:
        return {**registry(), "block_word": PolicySpec(_BlockWordConfig, _BlockWord)}

    monkeypatch.setattr(policies, "_registry", with_block_word)


async def test_policy_refusing_a_message_closes_with_1008(
    block_word: None, demo_backends: Backends, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE], policies=[{"name": "block_word"}]))
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        await ws.send('{"message": "fine"}')
        assert json.loads(await ws.recv())["result"]["message"] == "fine"
        await ws.send('{"message": "this is forbidden"}')
        got = await frames(ws)
    assert got == [{"status": {"code": 7, "message": "message blocked", "details": []}}]
    assert ws.close_code == 1008
    # The same policy screens each message of an HTTP client stream.
    body = b'{"message":"forbidden"}\n'
    async with gw.http.post(f"{gw.url}/v1/chat", data=body, headers={"Content-Type": "application/x-ndjson"}) as r:
        assert r.status == 403


async def test_idle_timeout_closes_1001(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE], websocket={"idle_timeout_s": 0.3}))
    loop = asyncio.get_running_loop()
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        started = loop.time()
        status = json.loads(await ws.recv())["status"]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert 0.25 < loop.time() - started < 2.0
    assert status["code"] == 4 and ws.close_code == 1001


@pytest.fixture
async def counted(demo_backends: Backends) -> AsyncIterator[tuple[Backends, Stats]]:
    stats = Stats()
    echo = await echo_backend.serve(stats=stats)
    try:
        yield Backends(echo, demo_backends.library), stats
    finally:
        await echo.stop(0)


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_client_vanishing_cancels_the_call(
    counted: tuple[Backends, Stats], start_gateway: StartGateway, client: str
) -> None:
    backends, stats = counted
    raw = demo_config(backends, http_rules=[CHAT_RULE])
    raw["backends"]["echo"]["client"] = client
    gw = await start_gateway(raw)
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(ws_url(gw, "/v1/chat"))
    await ws.send_str('{"message": "__sleep__:5000"}')
    await asyncio.sleep(0.3)
    gone = loop.time()
    ws._response.connection.transport.abort()  # type: ignore[union-attr]  # no close frame: the TCP connection drops
    await session.close()
    for _ in range(100):
        if stats.cancelled:
            break
        await asyncio.sleep(0.02)
    assert stats.cancelled == 1 and stats.cancelled_at[0] - gone < 1.0


async def test_slow_client_slows_the_backend(counted: tuple[Backends, Stats], start_gateway: StartGateway) -> None:
    backends, stats = counted
    gw = await start_gateway(demo_config(backends, http_rules=[CHAT_RULE]))
    count = 5000
    async with connect(ws_url(gw, "/v1/items:stream"), max_queue=4) as ws:
        await ws.send(json.dumps({"count": count, "prefix": "p" * 4000}))
        await ws.recv()
        stalled_at = await settled(lambda: stats.sent)  # the client reads nothing: the backend must stall
        await asyncio.sleep(0.3)
        assert stats.sent == stalled_at and stalled_at * 8_000 < 16 * 1024 * 1024
        got = 1
        async for _ in ws:
            got += 1
    assert got == count + 1  # every item, then the status frame


async def test_fast_client_is_slowed_to_the_backend(gw: Gateway) -> None:
    """Many messages sent at once all come back, in order: the inbound queue pauses reading instead
    of dropping or buffering without bound."""
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        for i in range(500):
            await ws.send(json.dumps({"message": str(i)}))
        await ws.send(HALF_CLOSE)
        got = await frames(ws)
    assert [f["result"]["message"] for f in got[:-1]] == [str(i) for i in range(500)]


async def test_shutdown_closes_sockets_with_1001(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE]))
    async with connect(ws_url(gw, "/v1/chat")) as ws:
        await ws.send('{"message": "x"}')
        await ws.recv()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await gw.serving.stop()
        status = json.loads(await ws.recv())["status"]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert status["code"] == 14 and ws.close_code == 1001
    assert loop.time() - started < 3.0


@pytest.mark.slow
async def test_a_thousand_concurrent_sockets(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE]))
    url = ws_url(gw, "/v1/chat")
    opened = asyncio.Event()
    open_count = 0

    async def one(i: int) -> list[str]:
        nonlocal open_count
        async with connect(url, open_timeout=30, ping_interval=None) as ws:
            open_count += 1
            if open_count == 1000:
                opened.set()
            await asyncio.wait_for(opened.wait(), 30)  # all thousand are open at once
            got = []
            for j in range(3):
                await ws.send(json.dumps({"message": f"{i}-{j}"}))
                got.append(json.loads(await ws.recv())["result"]["message"])
            await ws.send(HALF_CLOSE)
            assert json.loads(await ws.recv())["status"]["code"] == 0
            return got

    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert results == [[f"{i}-{j}" for j in range(3)] for i in range(1000)]
    assert loop.time() - started < 30
    assert websockets.__version__  # the client library the issue names
