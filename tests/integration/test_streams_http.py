"""gRPC streams over plain HTTP through a real gateway: NDJSON, JSON array, SSE, client and bidi
streams from the body, cancellation on disconnect, and a slow reader slowing the backend down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import echo_backend, tally_backend
from tests.support.echo_backend import Stats
from tests.support.waiting import settled

from .conftest import Backends, StartGateway, demo_config

CHAT_RULE = {"selector": "echo.v1.EchoService.Chat", "post": "/v1/chat", "body": "*"}
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def counted(demo_backends: Backends) -> AsyncIterator[tuple[Backends, Stats]]:
    """The demo backends, with an echo backend whose streaming RPCs are counted."""
    stats = Stats()
    echo = await echo_backend.serve(stats=stats)
    try:
        yield Backends(echo, demo_backends.library), stats
    finally:
        await echo.stop(0)


def config(backends: Backends, client: str = "h2", **overrides: Any) -> dict[str, Any]:
    raw = demo_config(backends, http_rules=[CHAT_RULE], **overrides)
    raw["backends"]["echo"]["client"] = client
    return raw


async def test_json_array_when_configured(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = config(demo_backends)
    raw["services"]["echo.v1.EchoService"]["methods"] = {"StreamItems": {"transcoding": {"stream_format": "json_array"}}}
    gw = await start_gateway(raw)
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "3", "prefix": "p"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        assert [item["id"] for item in json.loads(await r.text())] == ["p0", "p1", "p2"]
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "0"}) as r:
        assert json.loads(await r.text()) == []
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "2", "prefix": "__error__:ABORTED"}) as r:
        doc = json.loads(await r.text())  # still one valid document: the error is its last element
    assert [x.get("id") for x in doc[:2]] == ["item-0", "item-1"] and doc[2]["error"]["code"] == 10


async def test_sse_when_the_client_accepts_it(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(config(demo_backends))
    headers = {"Accept": "text/event-stream"}
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "2", "prefix": "s"}, headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-cache"
        text = await r.text()
    events = [e for e in text.split("\n\n") if e]
    assert [json.loads(e.removeprefix("data: "))["id"] for e in events] == ["s0", "s1"]
    params = {"count": "1", "prefix": "__error__:NOT_FOUND"}
    async with gw.http.get(f"{gw.url}/v1/items:stream", params=params, headers=headers) as r:
        events = [e for e in (await r.text()).split("\n\n") if e]
    assert events[0].startswith("data: ")
    assert events[-1].startswith("event: error\ndata: ")
    assert json.loads(events[-1].split("data: ", 1)[1])["code"] == 5


async def test_headers_come_with_the_first_message(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(config(demo_backends))
    params = {"count": "2", "prefix": "__sleep__:600"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gw.http.get(f"{gw.url}/v1/items:stream", params=params) as r:
        head_at = loop.time() - started
        first = await r.content.readline()
        assert json.loads(first)["result"]["id"] == "item-0"
    assert 0.5 <= head_at < 1.1  # not before the first message (600 ms), and not after the whole stream
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "1", "prefix": "__error__:NOT_FOUND"}) as r:
        assert r.status == 200  # the error came after a message: it is the last line
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "0", "prefix": "__error__:NOT_FOUND"}) as r:
        assert r.status == 404  # the error came first: an ordinary error response
        assert (await r.json())["code"] == 5


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_disconnect_cancels_the_backend_call(
    counted: tuple[Backends, Stats], start_gateway: StartGateway, client: str
) -> None:
    backends, stats = counted
    gw = await start_gateway(config(backends, client))
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession()
    # The backend waits 5 s before each item: nothing is written while the client leaves, so only
    # watching the connection can tell.
    response = await session.get(f"{gw.url}/v1/items:stream", params={"count": "3", "prefix": "__sleep__:5000"})
    await asyncio.sleep(0.3)
    left = loop.time()
    response.close()
    await session.close()
    for _ in range(100):
        if stats.cancelled:
            break
        await asyncio.sleep(0.02)
    assert stats.cancelled == 1
    assert stats.cancelled_at[0] - left < 1.0


async def test_disconnect_mid_stream_cancels_too(counted: tuple[Backends, Stats], start_gateway: StartGateway) -> None:
    backends, stats = counted
    gw = await start_gateway(config(backends))
    params = {"count": "1000", "prefix": "__sleep__:20"}
    async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/v1/items:stream", params=params) as r:
        await r.content.readline()
    for _ in range(50):
        if stats.cancelled:
            break
        await asyncio.sleep(0.02)
    assert stats.cancelled == 1 and stats.sent < 1000


async def test_slow_reader_slows_the_backend(counted: tuple[Backends, Stats], start_gateway: StartGateway) -> None:
    backends, stats = counted
    gw = await start_gateway(config(backends))
    count, prefix = 5000, "p" * 4000  # ~8 kB a message, 40 MB in all
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": str(count), "prefix": prefix}) as r:
        await r.content.readline()
        stalled_at = await settled(lambda: stats.sent)  # read nothing: the backend must stall, not run ahead
        await asyncio.sleep(0.3)
        assert stats.sent == stalled_at  # stalled for good, not merely slow
        # What is in flight is bounded by windows and socket buffers (about 8 MB measured: the h2
        # stream window is 4 MB), whatever the stream's length.
        assert stalled_at * 8_000 < 16 * 1024 * 1024, f"the backend ran ahead by {stalled_at} messages"
        lines = 1
        async for _ in r.content:
            lines += 1
    assert lines == count and stats.sent == count


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_bidi_over_http_ndjson(demo_backends: Backends, start_gateway: StartGateway, client: str) -> None:
    gw = await start_gateway(config(demo_backends, client))
    body = b'{"message":"a"}\n{"message":"b","repeat":2}\n\n{"message":"c"}'
    async with gw.http.post(f"{gw.url}/v1/chat", data=body, headers=NDJSON) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [line["result"]["message"] for line in lines] == ["a", "bb", "c"]


async def test_bidi_over_http_json_array_and_sse(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(config(demo_backends))
    async with gw.http.post(f"{gw.url}/v1/chat", json=[{"message": "x"}, {"message": "y"}]) as r:
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [line["result"]["message"] for line in lines] == ["x", "y"]
    headers = {**NDJSON, "Accept": "text/event-stream"}
    async with gw.http.post(f"{gw.url}/v1/chat", data=b'{"message":"z"}\n', headers=headers) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert json.loads((await r.text()).removeprefix("data: "))["message"] == "z"


async def test_bidi_over_http_streams_both_ways(demo_backends: Backends, start_gateway: StartGateway) -> None:
    """The first answer arrives while the request body is still open: nothing waits for the whole body."""
    gw = await start_gateway(config(demo_backends))
    sent: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await sent.get()) is not None:
            yield chunk

    await sent.put(b'{"message":"first"}\n')
    request = asyncio.ensure_future(gw.http.post(f"{gw.url}/v1/chat", data=body(), headers=NDJSON))
    response = await asyncio.wait_for(request, 5)
    first = json.loads(await asyncio.wait_for(response.content.readline(), 5))
    assert first["result"]["message"] == "first"
    await sent.put(b'{"message":"second"}\n')
    second = json.loads(await asyncio.wait_for(response.content.readline(), 5))
    assert second["result"]["message"] == "second"
    await sent.put(None)
    assert await response.content.read() == b""
    response.close()


async def test_bad_message_mid_stream_ends_with_an_error_line(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config(demo_backends))
    sent: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await sent.get()) is not None:
            yield chunk

    await sent.put(b'{"message":"ok"}\n')
    async with gw.http.post(f"{gw.url}/v1/chat", data=body(), headers=NDJSON) as r:
        assert json.loads(await r.content.readline())["result"]["message"] == "ok"
        await sent.put(b'{"message":\n')  # after the stream began: its last line is the error
        await sent.put(None)
        last = json.loads(await r.content.readline())
    assert last["error"]["code"] == 3 and "malformed JSON" in last["error"]["message"]
    async with gw.http.post(f"{gw.url}/v1/chat", data=b'{"mesage":"typo"}\n', headers=NDJSON) as r:
        assert r.status == 400  # nothing was sent yet: an ordinary error response
    async with gw.http.post(f"{gw.url}/v1/chat", data=b"<a/>", headers={"Content-Type": "text/xml"}) as r:
        assert r.status == 415
    async with gw.http.post(f"{gw.url}/v1/chat", data=b'{"message":"__error__:OUT_OF_RANGE"}\n', headers=NDJSON) as r:
        assert r.status == 400 and (await r.json())["code"] == 11


@pytest.fixture
async def tally(demo_backends: Backends, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A gateway config serving the demo services and the client-streaming tally.v1.Tally."""
    server = await tally_backend.serve()
    raw = config(demo_backends)
    raw["descriptors"].append({"kind": "descriptor_set", "path": str(tally_backend.descriptor_set(tmp_path / "t.binpb"))})
    raw["backends"]["tally"] = {"addresses": [server.address], "health": {"enabled": False}}
    raw["services"]["tally.v1.Tally"] = {"backend": "tally", "timeout_ms": 3000}
    raw["http_rules"] = [*raw["http_rules"], {"selector": "tally.v1.Tally.Sum", "post": "/v1/sum", "body": "*"}]
    try:
        yield raw
    finally:
        await server.stop()


@pytest.mark.parametrize("client", ["h2", "grpcio"])
async def test_client_stream_over_http(tally: dict[str, Any], start_gateway: StartGateway, client: str) -> None:
    tally["backends"]["tally"]["client"] = client
    gw = await start_gateway(tally)
    body = b"".join(b'{"value":"%d"}\n' % i for i in range(1, 101))
    async with gw.http.post(f"{gw.url}/v1/sum", data=body, headers=NDJSON) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "application/json"
        assert await r.json() == {"sum": "5050", "count": 100}
    async with gw.http.post(f"{gw.url}/v1/sum", json=[{"value": 2}, {"value": "3"}]) as r:
        assert await r.json() == {"sum": "5", "count": 2}
    async with gw.http.post(f"{gw.url}/v1/sum", data=b"", headers=NDJSON) as r:
        assert await r.json() == {}  # no messages: an empty stream, answered with the defaults
    async with gw.http.post(f"{gw.url}/v1/sum", data=b'{"value":1}\n{"value":-1}\n', headers=NDJSON) as r:
        assert r.status == 400 and "negative" in (await r.json())["message"]
    async with gw.http.post(f"{gw.url}/v1/sum", data=b'{"value":1}\n{"valu":1}\n', headers=NDJSON) as r:
        assert r.status == 400 and (await r.json())["code"] == 3


async def test_client_streaming_method_over_http(demo_backends: Backends, start_gateway: StartGateway) -> None:
    """CreateBooks-style client streams are bound the same way; the echo service has none, so the
    library's client-streaming method, if any, is covered by the bidi tests above."""
    gw = await start_gateway(config(demo_backends))
    async with gw.http.get(f"{gw.admin}/routes") as r:
        routes = {x["name"]: x for x in await r.json()}
    assert routes["echo.v1.EchoService.Chat"]["client_streaming"] is True
