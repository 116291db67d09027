"""Message metrics of streams over HTTP on the admin `/metrics`, through a real gateway and backend.

`portcullis_stream_messages_total{route,format,direction}` and
`portcullis_stream_message_bytes{route,format,direction}` count and size every message passed on:
server streams as NDJSON, JSON array and SSE (out), client-stream bodies (in), gRPC-Web (both).
A final error chunk or trailer is not a message. Values are compared before and after, since the
registry lives as long as the test process.
"""

from __future__ import annotations

import json
import struct

import protos

from .conftest import Backends, Gateway, StartGateway, demo_config
from .test_metrics_tracing import Samples, get, scrape

protos.add_generated_path()
from echo.v1 import echo_pb2

ITEMS = "echo.v1.EchoService.StreamItems"
CHAT = "echo.v1.EchoService.Chat"
CHAT_RULE = {"selector": CHAT, "post": "/v1/chat", "body": "*"}


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def assert_counted(before: Samples, after: Samples, route: str, fmt: str, direction: str, sizes: list[int]) -> None:
    labels = {"route": route, "format": fmt, "direction": direction}
    assert delta(before, after, "portcullis_stream_messages_total", **labels) == len(sizes)
    assert delta(before, after, "portcullis_stream_message_bytes_count", **labels) == len(sizes)
    assert delta(before, after, "portcullis_stream_message_bytes_sum", **labels) == sum(sizes)


async def test_server_streams_count_each_message_in_each_format(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends))
    before = await scrape(gw.http, gw.admin)
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "3", "prefix": "n"}) as r:
        ndjson = await r.read()
    sse_headers = {"Accept": "text/event-stream"}
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "2", "prefix": "s"}, headers=sse_headers) as r:
        sse = await r.read()
    # Two messages then an error: the error line is not a message.
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "2", "prefix": "__error__:ABORTED"}) as r:
        failed = (await r.read()).splitlines(keepends=True)
    after = await scrape(gw.http, gw.admin)
    lines = ndjson.splitlines(keepends=True)
    assert len(lines) == 3
    error_free = [len(line) for line in failed if b'"error"' not in line]
    assert_counted(before, after, ITEMS, "ndjson", "out", [len(line) for line in lines] + error_free)
    events = [len(e) + 2 for e in sse.split(b"\n\n") if e]
    assert_counted(before, after, ITEMS, "sse", "out", events)


async def test_json_array_stream_counts_its_elements(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, transcoding={"stream_format": "json_array"}))
    before = await scrape(gw.http, gw.admin)
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "4", "prefix": "a"}) as r:
        body = await r.read()
    after = await scrape(gw.http, gw.admin)
    assert len(json.loads(body)) == 4
    labels = {"route": ITEMS, "format": "json_array", "direction": "out"}
    assert delta(before, after, "portcullis_stream_messages_total", **labels) == 4
    assert delta(before, after, "portcullis_stream_message_bytes_sum", **labels) == len(body) - 1  # all but "]"


async def test_client_stream_bodies_count_each_request_message(
    demo_backends: Backends, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(demo_config(demo_backends, http_rules=[CHAT_RULE]))
    before = await scrape(gw.http, gw.admin)
    pieces = [b'{"message":"a"}', b'{"message":"bb","repeat":2}']
    headers = {"Content-Type": "application/x-ndjson"}
    async with gw.http.post(f"{gw.url}/v1/chat", data=b"\n".join(pieces) + b"\n\n", headers=headers) as r:
        assert r.status == 200
        await r.read()
    async with gw.http.post(f"{gw.url}/v1/chat", data=b"[" + b",".join(pieces) + b"]", headers=headers) as r:
        assert r.status == 200
        await r.read()
    after = await scrape(gw.http, gw.admin)
    assert_counted(before, after, CHAT, "ndjson", "in", [len(p) for p in pieces])
    labels = {"route": CHAT, "format": "json_array", "direction": "in"}
    assert delta(before, after, "portcullis_stream_messages_total", **labels) == 2
    assert delta(before, after, "portcullis_stream_messages_total", route=CHAT, format="ndjson", direction="out") == 4


def grpc_web(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


async def test_grpc_web_counts_request_and_response_messages(gw: Gateway) -> None:
    before = await scrape(gw.http, gw.admin)
    headers = {"Content-Type": "application/grpc-web+proto"}
    echo = echo_pb2.EchoRequest(message="web").SerializeToString()
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/Echo", data=grpc_web(echo), headers=headers) as r:
        body = await r.read()
    reply_len = struct.unpack_from(">BI", body, 0)[1]
    items = echo_pb2.StreamItemsRequest(count=3, prefix="w").SerializeToString()
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/StreamItems", data=grpc_web(items), headers=headers) as r:
        stream = await r.read()
    frames, pos = [], 0
    while pos < len(stream):
        flag, length = struct.unpack_from(">BI", stream, pos)
        if not flag & 0x80:  # the trailer frame is not a message
            frames.append(5 + length)
        pos += 5 + length
    after = await scrape(gw.http, gw.admin)
    assert_counted(before, after, "echo.v1.EchoService.Echo", "grpc_web", "in", [len(echo)])
    assert_counted(before, after, "echo.v1.EchoService.Echo", "grpc_web", "out", [5 + reply_len])
    assert_counted(before, after, ITEMS, "grpc_web", "in", [len(items)])
    assert_counted(before, after, ITEMS, "grpc_web", "out", frames)
    assert len(frames) == 3
